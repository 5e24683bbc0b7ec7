"""At most N calls in any one second, per process, with no burst above it."""

from __future__ import annotations

import asyncio
import time
from collections import deque

# A little over a second, so that calls spaced at the limit still arrive within it after
# the network's jitter.
WINDOW = 1.02


class RateLimiter:
    """A sliding one-second window: a call waits until fewer than `per_second` fell in it.

    Avionté suspends keys that poll, so the bound holds over every window, not on
    average: a burst after a quiet spell gets no more than `per_second` at once.
    """

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._starts: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        """Return when one more call may start now."""
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._starts and now - self._starts[0] >= WINDOW:
                    self._starts.popleft()
                if len(self._starts) < self.per_second:
                    self._starts.append(now)
                    return
                await asyncio.sleep(WINDOW - (now - self._starts[0]))
