"""Batched writes: handlers wait while their events go to PostgreSQL together.

Each handler hands its entry over and waits; a loop writes whatever has gathered (up
to `max_batch`) in one transaction and then lets every handler of the batch return, so
a message is acked only once its row is committed. While the database cannot be used
the loop waits it out, like dedupe does; a batch that fails for another reason is
written again one entry at a time, so only the entry at fault fails its handler.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog

from consumers.dedupe import UNAVAILABLE
from consumers.history.store import Entry, HistoryStore
from service.shared.timing import backoff

log = structlog.get_logger("consumers.history")

MAX_BATCH = 500
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)


class Batcher:
    """Gathers entries from concurrent handlers and writes them in batches."""

    def __init__(self, store: HistoryStore, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._waiting: list[tuple[Entry, asyncio.Future[None]]] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._down = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="history-writer")

    async def add(self, entry: Entry) -> None:
        """Return once `entry` is stored (or the history already held its message id)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((entry, done))
        self._arrived.set()
        await done

    async def close(self) -> None:
        """Stop. The worker closes this after its handlers have drained: none is waiting."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: len(batch)]
                await self._write(batch)

    async def _write(self, batch: list[tuple[Entry, asyncio.Future[None]]]) -> None:
        try:
            await self._outlasting([entry for entry, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch, exc)
                return
            log.warning("a history batch failed; writing its events one by one", error=repr(exc))
            for one in batch:
                await self._write([one])
            return
        _settle(batch, None)

    async def _outlasting(self, entries: list[Entry]) -> int:
        failures = 0
        while True:
            try:
                stored = await self.store.write(entries)
            except UNAVAILABLE as exc:
                if not self._down:
                    log.warning(
                        "history database unavailable; events wait", error=type(exc).__name__
                    )
                self._down = True
                await asyncio.sleep(backoff(RETRY_DELAYS, failures))
                failures += 1
                continue
            except asyncpg.exceptions.CheckViolationError:
                # "no partition of relation": retention dropped a day this process knew.
                if failures:
                    raise
                self.store.forget_partitions()
                failures += 1
                continue
            if self._down:
                log.info("history database available again")
                self._down = False
            return stored


def _settle(batch: list[tuple[Entry, asyncio.Future[None]]], exc: BaseException | None) -> None:
    for _, done in batch:
        if done.done():
            continue
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)
