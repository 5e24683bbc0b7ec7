"""The benchmark's no-op consumer, alone in its module so a worker runs nothing else.

Once it has handled BENCH_COUNT, it writes to BENCH_DONE how many messages followed
the first, and the wall-clock and CPU seconds they took: the rate excludes process
start-up, as the raw loop's does.
"""

from __future__ import annotations

import os
import time

from consumers import Consumer, Event

noop = Consumer("bench-noop", concurrency=64)
_handled = 0
_first = (0.0, 0.0)
_count = int(os.environ.get("BENCH_COUNT", "0"))


def _write(path: str, text: str) -> None:
    # Whole or not at all: the benchmark reads the file as soon as it exists.
    with open(f"{path}.part", "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(f"{path}.part", path)


@noop.on("#")
async def nothing(event: Event) -> None:
    global _handled, _first
    if _handled == 0:
        _first = (time.monotonic(), time.process_time())
    _handled += 1
    if _handled == _count:
        wall, cpu = time.monotonic() - _first[0], time.process_time() - _first[1]
        _write(os.environ["BENCH_DONE"], f"{_handled - 1} {wall} {cpu}\n")
