"""At most N calls in any one second, as Avionté counts them, with no burst above it."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

WINDOW = 1.0


class RateLimiter:
    """A sliding one-second window over the calls' ends: at most `per_second` in any one.

    Avionté suspends keys that poll, so the bound holds over every window, not on
    average: a burst after a quiet spell gets no more than `per_second` at once. A call
    holds its place from its start until a second after its answer came: it reached
    Avionté before its answer left, so the calls in any second of Avionté's clock are
    at most `per_second`, however the network delays each one.
    """

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._ends: deque[float] = deque()
        self._running = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait until one more call may start; hold its place while it runs."""
        async with self._changed:
            while True:
                now = time.monotonic()
                while self._ends and now - self._ends[0] >= WINDOW:
                    self._ends.popleft()
                if len(self._ends) + self._running < self.per_second:
                    self._running += 1
                    break
                wait = WINDOW - (now - self._ends[0]) if self._ends else None
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), wait)
        try:
            yield
        finally:
            async with self._changed:
                self._running -= 1
                self._ends.append(time.monotonic())
                self._changed.notify_all()
