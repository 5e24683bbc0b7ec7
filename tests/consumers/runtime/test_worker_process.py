"""Worker processes as an operator runs them: replicas, a crash, and a graceful stop.

The consumer here, `tests.workers.recorder`, lives outside the `consumers`
package and runs by its dotted path.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from consumers.topology import ConsumerQueues
from tests.support import BusView
from tests.worker_processes import SpawnWorker, WorkerProcess
from tests.workers import recorder

pytestmark = pytest.mark.rabbit

Spawn = Callable[..., Awaitable[WorkerProcess]]


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def until(condition: Callable[[], bool], within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.05)


@pytest.fixture
def record_file(tmp_path: Path) -> Path:
    return tmp_path / "records.jsonl"


@pytest.fixture
def spawn(spawn_worker: SpawnWorker, record_file: Path) -> Spawn:
    async def start(handler_seconds: float = 0) -> WorkerProcess:
        return await spawn_worker(
            "tests.workers.recorder",
            recorder.consumer,
            LOG_FORMAT="json",
            RECORD_FILE=str(record_file),
            HANDLER_SECONDS=str(handler_seconds),
            METRICS_PORT="0",
        )

    return start


async def test_replicas_compete_and_share_the_work(
    bus: BusView, spawn: Spawn, record_file: Path
) -> None:
    first, second = await spawn(), await spawn()
    sent = [await bus.publish_event("talent_created", CorrelationId=f"c-{n}") for n in range(500)]
    await until(lambda: len(records(record_file)) >= 500)
    await asyncio.sleep(0.5)
    handled = records(record_file)
    assert Counter(r["message_id"] for r in handled) == Counter(sent)
    by_process = Counter(r["pid"] for r in handled)
    assert set(by_process) == {first.process.pid, second.process.pid}
    for worker in (first, second):
        worker.process.send_signal(signal.SIGTERM)
        assert await worker.process.wait() == 0


async def test_a_killed_worker_loses_nothing(bus: BusView, spawn: Spawn, record_file: Path) -> None:
    doomed = await spawn(handler_seconds=30)
    message_id = await bus.publish_event("placement_updated", CorrelationId="crash-1")
    await until(lambda: any(r["phase"] == "start" for r in records(record_file)))
    doomed.process.kill()
    await doomed.process.wait()

    survivor = await spawn()
    await until(lambda: any(r["phase"] == "end" for r in records(record_file)))
    [start] = [r for r in records(record_file) if r["phase"] == "start"]
    [end] = [r for r in records(record_file) if r["phase"] == "end"]
    assert (start["pid"], start["redelivered"]) == (doomed.process.pid, False)
    assert (end["pid"], end["message_id"], end["redelivered"]) == (
        survivor.process.pid,
        message_id,
        True,
    )


async def test_sigterm_during_a_burst_acks_or_returns_every_message(
    bus: BusView, spawn: Spawn, record_file: Path
) -> None:
    worker = await spawn(handler_seconds=0.2)
    sent = {await bus.publish_event("talent_saved", CorrelationId=f"s-{n}") for n in range(200)}
    await until(lambda: sum(r["phase"] == "end" for r in records(record_file)) >= 16)
    worker.process.send_signal(signal.SIGTERM)
    assert await worker.process.wait() == 0

    started = {r["message_id"] for r in records(record_file) if r["phase"] == "start"}
    finished = {r["message_id"] for r in records(record_file) if r["phase"] == "end"}
    assert started == finished  # every handler that began was let finish
    queue = await bus.queue(ConsumerQueues(bus.names.prefix, "recorder").main)
    waiting = {str(message.message_id) for message in await bus.drain(queue)}
    assert finished | waiting == sent
    assert not finished & waiting  # finished ones were acked, not handed back
    assert len(waiting) > 0
