"""A consumer whose first attempt at every message fails; the retry, 2 s later, counts it."""

from __future__ import annotations

import os

from consumers import Consumer, Event

consumer = Consumer("fail-once", retry_delays=(2.0,), concurrency=64)


def _append(message_id: str) -> None:
    with open(os.environ["COUNT_FILE"], "a", encoding="utf-8") as file:
        file.write(message_id + "\n")


@consumer.on("#")
async def count(event: Event) -> None:
    if event.attempt == 1:
        raise RuntimeError("the first attempt fails on purpose")
    _append(event.message_id)
