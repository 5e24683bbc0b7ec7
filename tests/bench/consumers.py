"""Consumers for the benchmark: a no-op one and one that times the end-to-end latency.

`bench-noop` writes the time when it has handled BENCH_COUNT messages to BENCH_DONE.
`bench-e2e` appends, per message, the seconds from the POST (`SentAt` in the body) to
the start of its handler, to BENCH_LATENCIES.
"""

from __future__ import annotations

import os
import time

from consumers import Consumer, Event

noop = Consumer("bench-noop", concurrency=64)
e2e = Consumer("bench-e2e", concurrency=64)
_handled = 0


def _write(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(text)


@noop.on("#")
async def nothing(event: Event) -> None:
    global _handled
    _handled += 1
    if _handled == int(os.environ["BENCH_COUNT"]):
        _write(os.environ["BENCH_DONE"], f"{time.time()}\n")


@e2e.on("#")
async def timed(event: Event) -> None:
    started = time.time()
    sent = event.payload.get("SentAt")
    if isinstance(sent, float):
        _write(os.environ["BENCH_LATENCIES"], f"{started - sent}\n")
