"""Replicas on one host with nothing set: side by side, and started at the same instant."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.support import AMQP_URL, BusView, consumer_queue_names, open_bus
from tests.worker_processes import SpawnWorker, WorkerProcess, start_worker
from tests.workers import recorder

pytestmark = pytest.mark.rabbit

ROUNDS = 6
REPLICAS = 3


def handled_by(record: Path) -> Counter[int]:
    if not record.exists():
        return Counter()
    return Counter(json.loads(line)["pid"] for line in record.read_text().splitlines())


async def until_handled(record: Path, count: int) -> None:
    async with asyncio.timeout(20):
        while sum(handled_by(record).values()) < count:
            await asyncio.sleep(0.05)


async def test_two_workers_with_nothing_set_both_consume(
    bus: BusView, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    record = tmp_path / "records.jsonl"
    # No METRICS_PORT: the default, as a user meets it.
    env = {"RECORD_FILE": str(record), "HANDLER_SECONDS": "0.05"}
    first = await spawn_worker("tests.workers.recorder", recorder.consumer, **env)
    second = await spawn_worker("tests.workers.recorder", recorder.consumer, **env)
    for _ in range(60):
        await bus.publish_event("talent_created")
    await until_handled(record, 60)
    assert set(handled_by(record)) == {first.process.pid, second.process.pid}
    urls = [worker.events("worker started")[0]["metrics"] for worker in (first, second)]
    assert urls[0] != urls[1]  # one has 9100 (unless something else does); the other a free port
    async with aiohttp.ClientSession() as session:
        for url in urls:
            async with session.get(url.replace("0.0.0.0", "127.0.0.1")) as response:
                assert response.status == 200
                assert "relay_consumer_messages_total" in await response.text()
    assert [await worker.stop() for worker in (first, second)] == [0, 0]


async def test_a_set_metrics_port_that_is_taken_is_a_clear_error(
    bus: BusView, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    first = await spawn_worker("tests.workers.recorder", recorder.consumer, RECORD_FILE="x")
    port = first.events("worker started")[0]["metrics"].rsplit(":", 1)[1].split("/")[0]
    log = tmp_path / "second.log"
    env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix, "METRICS_PORT": port}
    with pytest.raises(AssertionError, match="worker exited 2"):
        await start_worker("tests.workers.recorder", log, env)
    assert f"error: METRICS_PORT: cannot serve on {port}" in log.read_text()


async def test_replicas_started_at_the_same_instant_on_a_new_prefix_all_consume(
    tmp_path: Path,
) -> None:
    for round_ in range(ROUNDS):
        prefix = f"test-{uuid.uuid4().hex[:12]}"
        connection, bus = await open_bus(prefix)
        bus.forget_later(*consumer_queue_names(prefix, recorder.consumer))
        record = tmp_path / f"records-{round_}.jsonl"
        env = {
            "AMQP_URL": AMQP_URL,
            "BUS_PREFIX": prefix,
            "RECORD_FILE": str(record),
            "HANDLER_SECONDS": "0.05",
        }
        workers: list[WorkerProcess] = []
        try:
            started = await asyncio.gather(
                *(
                    start_worker("tests.workers.recorder", tmp_path / f"w-{round_}-{n}.log", env)
                    for n in range(REPLICAS)
                ),
                return_exceptions=True,
            )
            workers = [w for w in started if isinstance(w, WorkerProcess)]
            failed = [w for w in started if not isinstance(w, WorkerProcess)]
            assert not failed, f"round {round_}: {failed}"
            for _ in range(90):
                await bus.publish_event("talent_created")
            await until_handled(record, 90)
            assert set(handled_by(record)) == {w.process.pid for w in workers}, f"round {round_}"
        finally:
            for worker in workers:
                await worker.stop()
            await bus.remove_all()
            await connection.close()
