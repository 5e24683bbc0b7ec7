"""A consumer with dedupe on, recording each handling it starts and ends in `RECORD_FILE`.

The payload steers it: `Fail` fails the first attempt; `Effect` writes a row to the
table `once_effects` in the transaction shared with the dedupe record, and with
`FailInside` the first attempt fails inside that transaction. `HANDLER_SECONDS` makes
each handling take that long.
"""

from __future__ import annotations

import asyncio
import json
import os

from consumers import Consumer, Event

consumer = Consumer("once", retry_delays=(0.2,), concurrency=8, dedupe=True)


def _record(phase: str, event: Event) -> None:
    line = {"phase": phase, "pid": os.getpid(), "message_id": event.message_id}
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as file:
        file.write(json.dumps({**line, "attempt": event.attempt}) + "\n")


@consumer.on("#")
async def handle(event: Event) -> None:
    _record("start", event)
    await asyncio.sleep(float(os.environ.get("HANDLER_SECONDS", "0")))
    if event.payload.get("Fail") and event.attempt == 1:
        raise RuntimeError("the first attempt fails")
    if event.payload.get("Effect"):
        async with event.transaction() as db:
            await db.execute(
                "INSERT INTO once_effects (message_id, pid) VALUES ($1, $2)",
                event.message_id,
                os.getpid(),
            )
            if event.payload.get("FailInside") and event.attempt == 1:
                raise RuntimeError("the first attempt fails inside its transaction")
    _record("end", event)
