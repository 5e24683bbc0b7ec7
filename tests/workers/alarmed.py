"""Consumers for the alarm tests: one that works slowly, one whose failures need copies.

`steady` records each talent event in `RECORD_FILE` after `HANDLER_SECONDS`. `copying`
fails every placement event, so that each attempt publishes a retry or a dead copy.
"""

from __future__ import annotations

import asyncio
import json
import os

from consumers import Consumer, Event

steady = Consumer("steady", concurrency=8)
copying = Consumer("copying", retry_delays=(3.0,), concurrency=2)


def _record(event: Event) -> None:
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as file:
        file.write(json.dumps({"message_id": event.message_id}) + "\n")


@steady.on("talent.#")
async def record(event: Event) -> None:
    await asyncio.sleep(float(os.environ.get("HANDLER_SECONDS", "0")))
    _record(event)


@copying.on("placement.#")
async def fail(event: Event) -> None:
    raise RuntimeError(f"failing attempt {event.attempt} on purpose")
