"""A consumer whose handler blocks in a thread for a minute, as a stuck fsync would."""

from __future__ import annotations

import asyncio
import os
import time

from consumers import Consumer, Event

consumer = Consumer("stuck", retry_delays=(), concurrency=1)


def _append(line: str) -> None:
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as file:
        file.write(line)


@consumer.on("#")
async def block(event: Event) -> None:
    _append("started\n")
    await asyncio.to_thread(time.sleep, 60)
