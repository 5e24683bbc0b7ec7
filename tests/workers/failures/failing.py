"""Consumers that fail on purpose, as a test asks through the body of each event.

`Fail` in the payload: raise with that text (`"surrogate"` gives a lone surrogate, which
no UTF-8 encoder takes). `Reject`: reject with it. `Group`: raise a Reject inside a
task group. Anything else is recorded in `RECORD_FILE` with its message id and attempt.
"""

from __future__ import annotations

import asyncio
import json
import os

from consumers import Consumer, Event, Reject

consumer = Consumer("failing", retry_delays=(0.2,), concurrency=2)


def _text(value: object) -> str:
    return os.fsdecode(b"\xe9") if value == "surrogate" else str(value)


def _record(event: Event) -> None:
    line = {"message_id": event.message_id, "attempt": event.attempt, "pid": os.getpid()}
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")


async def _reject_in_a_group(text: str) -> None:
    async def inner() -> None:
        raise Reject(text)

    async with asyncio.TaskGroup() as group:
        group.create_task(inner())


@consumer.on("#")
async def handle(event: Event) -> None:
    payload = event.payload
    if "Group" in payload:
        await _reject_in_a_group(_text(payload["Group"]))
    if "Reject" in payload:
        raise Reject(_text(payload["Reject"]))
    _record(event)
    if "Fail" in payload:
        raise RuntimeError(_text(payload["Fail"]))
