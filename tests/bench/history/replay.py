"""Replay from the history to one consumer's queue, through `consumers.history.replay`.

The consumer is declared and recorded in the registry as a worker does on start
(`enrol`); no worker consumes it, so the queue's length afterwards counts what arrived.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import aio_pika

from consumers import Consumer, Event
from consumers.history.query import Filter, count
from consumers.history.replay import Progress, replay
from consumers.history.store import HistoryStore
from consumers.operations.registry import enrol
from consumers.topology import ConsumerQueues
from service.shared.bus import BusNames
from tests.bench.processes import settle
from tests.support import AMQP_URL

target = Consumer("bench-replay", concurrency=64)


@target.on("#")
async def ignored(event: Event) -> None:
    """Never called: nothing consumes the queue during the benchmark."""


async def replay_rate(
    prefix: str, store: HistoryStore, since: datetime, until: datetime | None
) -> dict[str, Any]:
    """Replay the events received from `since` to `until` to `bench-replay`; events/s.

    The queue is counted, then emptied for the next round.
    """
    names = BusNames(prefix)
    chosen = Filter(since=since, until=until)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await enrol(connection, channel, names, target)
        total = await count(store, chosen)
        await settle()
        began, cpu = time.perf_counter(), time.process_time()
        progress = await replay(connection, names, target.name, store, chosen, Progress())
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
        queue = await channel.declare_queue(ConsumerQueues(prefix, target.name).main, passive=True)
        queued = queue.declaration_result.message_count
        await queue.purge()
    return {
        "matching": total,
        "replayed": progress.replayed,
        "skipped": progress.skipped,
        "queued": queued,
        "seconds": seconds,
        "per_second": progress.replayed / seconds,
        "cpu_us": cpu / max(progress.replayed, 1) * 1e6,
    }
