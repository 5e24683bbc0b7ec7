"""Worker processes under failure: unencodable errors, returned copies, stuck threads, odd ids."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
from pamqp.commands import Basic

from consumers.topology import ConsumerQueues
from tests.receivers import free_port
from tests.support import AMQP_URL, BusView
from tests.tools.raw_amqp import publish_raw
from tests.worker_processes import SpawnWorker
from tests.workers.failures import failing, stuck, two_failing

pytestmark = pytest.mark.rabbit


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def until(condition: Any, within: float = 20) -> None:
    async with asyncio.timeout(within):
        while not await condition():
            await asyncio.sleep(0.1)


def counted(metrics: str, **labels: str) -> float:
    """The sum of `relay_consumer_messages_total` samples that carry all of `labels`."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("relay_consumer_messages_total{") and all(w in line for w in wanted)
    )


async def depth(bus: BusView, queue: str) -> int:
    declared = await bus.channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


async def dead_letters(bus: BusView, queue: str, count: int) -> list[aio_pika.abc.AbstractMessage]:
    dead = await bus.queue(queue)
    return [await bus.get(dead, timeout=20) for _ in range(count)]


@pytest.mark.parametrize("log_format", ["auto", "console"])
async def test_an_error_text_no_log_can_encode_neither_stalls_nor_loses(
    bus: BusView, spawn_worker: SpawnWorker, tmp_path: Path, log_format: str
) -> None:
    record = tmp_path / "records.jsonl"
    worker = await spawn_worker(
        "tests.workers.failures.failing",
        failing.consumer,
        RECORD_FILE=str(record),
        LOG_FORMAT=log_format,
        METRICS_PORT="0",
    )
    queues = ConsumerQueues(bus.names.prefix, failing.consumer.name)
    bad = [await bus.publish_event("talent_created", Fail="surrogate") for _ in range(2)]
    rejected = await bus.publish_event("talent_created", Reject="surrogate")
    good = [await bus.publish_event("talent_created") for _ in range(3)]

    letters = await dead_letters(bus, queues.dead, 3)
    by_id = {str(letter.message_id): letter.headers for letter in letters}
    assert set(by_id) == {*bad, rejected}
    for headers in by_id.values():
        assert headers["x-error-message"] == "\\udce9"  # escaped, not lost
    assert by_id[rejected]["x-error-type"] == "Reject"
    assert by_id[rejected]["x-attempts"] == 1  # at once, not after 51 deliveries

    async def good_ones_handled() -> bool:
        return {line["message_id"] for line in lines(record)} >= set(good)

    await until(good_ones_handled)
    assert await depth(bus, queues.main) == 0  # nothing stranded unacked or waiting
    assert await worker.stop() == 0
    text = worker.text()
    assert text.count("handler failed") == 4  # each bad event twice: attempt and retry
    assert "\\udce9" in text  # the log says what the error said, escaped
    assert "could not settle the message" not in text


async def test_a_reject_raised_in_a_task_group_dead_letters_at_once(
    bus: BusView, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    await spawn_worker(
        "tests.workers.failures.failing",
        failing.consumer,
        RECORD_FILE=str(tmp_path / "r"),
        METRICS_PORT="0",
    )
    message_id = await bus.publish_event("talent_created", Group="no such talent")
    [letter] = await dead_letters(bus, ConsumerQueues(bus.names.prefix, "failing").dead, 1)
    assert letter.message_id == message_id
    assert letter.headers["x-error-type"] == "Reject"
    assert letter.headers["x-error-message"] == "no such talent"
    assert letter.headers["x-attempts"] == 1


async def test_a_returned_copy_is_never_charged_to_another_message(
    bus: BusView, spawn_worker: SpawnWorker
) -> None:
    port = free_port()
    worker = await spawn_worker(
        "tests.workers.failures.two_failing",
        two_failing.first,
        two_failing.second,
        METRICS_PORT=str(port),
    )
    a = ConsumerQueues(bus.names.prefix, "fail-a")
    # An operator deletes a retry queue (as for delays no longer in the code).
    await bus.channel.queue_delete(a.retry(30))
    ids = [await bus.publish_event("talent_created") for _ in range(200)]

    async def scraped() -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            return await response.text()

    async def b_retried_all() -> bool:
        # Held by the worker until due (`consumers.runtime.returns`), so not counted ready.
        return counted(await scraped(), consumer="fail-b", outcome="retried") == 200

    await until(b_retried_all, within=30)
    metrics = await scraped()
    assert counted(metrics, consumer="fail-a", outcome="retried") == 0  # none acked as retried
    assert counted(metrics, consumer="fail-b", outcome="retried") == 200

    async def a_handed_back() -> bool:
        return bool(worker.events("broker did not take the copy; the message went back"))

    await until(a_handed_back)
    wrong = [
        line
        for line in worker.events("broker did not take the copy; the message went back")
        if line["target"] != a.retry(30)
    ]
    assert wrong == []  # no copy for fail-b was ever reported returned
    assert await worker.stop() == 0
    assert await depth(bus, a.main) == len(ids)  # every one of fail-a's is back on its queue


async def test_sigterm_is_bounded_though_a_handler_thread_is_stuck(
    bus: BusView, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    record = tmp_path / "started"
    worker = await spawn_worker(
        "tests.workers.failures.stuck",
        stuck.consumer,
        RECORD_FILE=str(record),
        SHUTDOWN_TIMEOUT="2",
        METRICS_PORT="0",
    )
    await bus.publish_event("talent_created")

    async def started() -> bool:
        return record.exists()

    await until(started)
    began = time.monotonic()
    assert await worker.stop(within=30) == 0
    took = time.monotonic() - began
    assert took < 2 + 5, f"stopped after {took:.1f} s"  # SHUTDOWN_TIMEOUT plus one broker step
    assert worker.events("exiting with handler threads still running")
    assert await depth(bus, ConsumerQueues(bus.names.prefix, "stuck").main) == 1  # went back


async def test_copies_of_a_message_without_an_id_carry_the_events_id(
    bus: BusView, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    record = tmp_path / "records.jsonl"
    await spawn_worker(
        "tests.workers.failures.failing",
        failing.consumer,
        RECORD_FILE=str(record),
        METRICS_PORT="0",
    )
    correlation_id = str(uuid.uuid4())
    body = {"EventName": "talent_created", "CorrelationId": correlation_id, "Fail": "again"}
    await bus.declare()
    # Another client publishes without a message id (aiormq would always give it one).
    await publish_raw(
        AMQP_URL,
        bus.names.events,
        "talent.created",
        json.dumps(body).encode(),
        Basic.Properties(delivery_mode=2, content_type="application/json"),
    )
    [letter] = await dead_letters(bus, ConsumerQueues(bus.names.prefix, "failing").dead, 1)
    assert letter.message_id == correlation_id
    attempts = lines(record)
    assert [line["attempt"] for line in attempts] == [1, 2]
    assert {line["message_id"] for line in attempts} == {correlation_id}
