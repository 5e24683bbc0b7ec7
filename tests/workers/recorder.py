"""A consumer that records each message it handles as a JSON line in `RECORD_FILE`.

With `HANDLER_SECONDS` set, each handler first records its start, sleeps that long,
then records its end; tests use it to stop or kill a worker mid-handler.
"""

from __future__ import annotations

import asyncio
import json
import os

from consumers import Consumer, Event

consumer = Consumer("recorder", retry_delays=(0.2,), concurrency=8)


def _record(phase: str, event: Event) -> None:
    line = {
        "phase": phase,
        "pid": os.getpid(),
        "message_id": event.message_id,
        "attempt": event.attempt,
        "redelivered": event.redelivered,
    }
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")


@consumer.on("talent.#", "placement_updated")
async def record(event: Event) -> None:
    seconds = float(os.environ.get("HANDLER_SECONDS", "0"))
    if seconds:
        _record("start", event)
        await asyncio.sleep(seconds)
    _record("end", event)
