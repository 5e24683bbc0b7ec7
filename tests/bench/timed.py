"""The benchmark's end-to-end consumer, alone in its module so a worker runs nothing else.

Per message it appends to BENCH_LATENCIES the seconds from the POST (`SentAt` in the
body) to the start of its handler.
"""

from __future__ import annotations

import os
import time

from consumers import Consumer, Event

timed = Consumer("bench-e2e", concurrency=64)


def _write(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(text)


@timed.on("#")
async def latency(event: Event) -> None:
    started = time.time()
    sent = event.payload.get("SentAt")
    if isinstance(sent, float):
        _write(os.environ["BENCH_LATENCIES"], f"{started - sent}\n")
