"""A consumer that counts every event by appending its message id to `COUNT_FILE`."""

from __future__ import annotations

import os

from consumers import Consumer, Event

consumer = Consumer("counter", retry_delays=(0.5, 1.0), concurrency=32)


def _append(message_id: str) -> None:
    with open(os.environ["COUNT_FILE"], "a", encoding="utf-8") as file:
        file.write(message_id + "\n")


@consumer.on("#")
async def count(event: Event) -> None:
    _append(event.message_id)
