"""Two handlers on one event with dedupe on: the first commits a transaction, the second
fails its first attempt. Each records what it starts in `RECORD_FILE`."""

from __future__ import annotations

from consumers import Consumer, Event
from tests.workers.dedupe.once import _record

consumer = Consumer("once-pair", retry_delays=(0.2, 0.2), dedupe=True)


@consumer.on("#")
async def commits(event: Event) -> None:
    _record("commits", event)
    async with event.transaction() as db:
        await db.execute("SELECT 1")


@consumer.on("#")
async def fails_first(event: Event) -> None:
    _record("fails_first", event)
    if event.attempt == 1:
        raise RuntimeError("the first attempt fails")
