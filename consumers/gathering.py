"""Questions from concurrent callers, answered together in one round trip.

The first batch after a quiet spell waits GATHER_SECONDS for company before it goes;
while one batch is with the database the next one gathers, and goes as soon as the
first is answered, so a busy worker asks once for many messages without waiting twice.
Each caller gets its own answer, or the error the batch met.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

# Handlers start a turn or more apart: a lone question waits this long for others.
GATHER_SECONDS = 0.002

In = TypeVar("In")
Out = TypeVar("Out")


class Gathering(Generic[In, Out]):
    """Runs `answer` over the questions gathered meanwhile, up to `limit` at a time."""

    def __init__(
        self, answer: Callable[[list[In]], Awaitable[Sequence[Out]]], *, limit: int = 500
    ) -> None:
        self._answer = answer
        self._limit = limit
        self._waiting: list[tuple[In, asyncio.Future[Out]]] = []
        self._running: asyncio.Task[None] | None = None

    async def ask(self, question: In) -> Out:
        """The answer to `question`, from the next batch."""
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[Out] = loop.create_future()
        self._waiting.append((question, answered))
        if self._running is None:
            self._running = loop.create_task(self._run())
        return await answered

    async def _run(self) -> None:
        # Questions that came while a batch was out have had their company: no second wait.
        gathered = False
        try:
            while self._waiting:
                if not gathered and len(self._waiting) < self._limit:
                    await asyncio.sleep(GATHER_SECONDS)
                gathered = True
                batch = self._waiting[: self._limit]
                del self._waiting[: len(batch)]
                try:
                    answers = await self._answer([question for question, _ in batch])
                except asyncio.CancelledError:
                    for _, answered in batch:
                        answered.cancel()
                    raise
                except Exception as exc:
                    for _, answered in batch:
                        if not answered.done():
                            answered.set_exception(exc)
                    continue
                for (_, answered), answer in zip(batch, answers, strict=True):
                    if not answered.done():  # its caller was cancelled meanwhile
                        answered.set_result(answer)
        finally:
            self._running = None
            for _, answered in self._waiting:
                if not answered.done():
                    answered.set_exception(RuntimeError("the batch runner stopped"))
            self._waiting.clear()
