"""Durable storage of a delivery: confirmed by the broker, or else fsynced to the local spool."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from service.bus import Outgoing
from service.errors import PublishFailed
from service.publisher import Publisher
from service.spool import Spool

Where = Literal["broker", "spool"]


class DurableStore:
    """Where the receiver puts each delivery before answering 200.

    Without a spool directory, only a broker confirm counts and anything else is a
    `PublishFailed`. With one, a delivery the broker does not confirm in time is
    appended to the spool, and a background task republishes the spool once the
    broker is back.
    """

    def __init__(
        self,
        publisher: Publisher,
        *,
        spool_dir: Path | None = None,
        spool_max_bytes: int = 0,
        on_drained: Callable[[int], object] = lambda count: None,
    ) -> None:
        self.publisher = publisher
        self._on_drained = on_drained
        self.spool: Spool | None = None
        self._spool_dir = spool_dir
        self._spool_max_bytes = spool_max_bytes
        self._drainer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the spool (raises `SpoolUnusable` if it cannot be had), then connect."""
        if self._spool_dir is not None:
            self.spool = Spool.open(self._spool_dir, max_bytes=self._spool_max_bytes)
        await self.publisher.start()
        if self.spool is not None:
            self._drainer = asyncio.create_task(
                self.spool.drain(
                    self.publisher.publish, lambda: self.publisher.ready, self._on_drained
                ),
                name="spool-drainer",
            )

    async def close(self) -> None:
        """Stop draining and close; spooled records stay on disk for the next start."""
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
        if self.spool is not None:
            await self.spool.close()
        await self.publisher.close()

    @property
    def ready(self) -> bool:
        """Whether a delivery can be stored durably now."""
        return self.publisher.ready or (self.spool is not None and self.spool.accepting)

    async def store(self, message: Outgoing) -> Where:
        """Store `message`; raise `PublishFailed` or `SpoolError` when neither place takes it."""
        try:
            await self.publisher.publish(message)
        except PublishFailed:
            if self.spool is None:
                raise
            await self.spool.append(message)
            return "spool"
        return "broker"

    def status(self) -> dict[str, Any]:
        """The readiness details for `/readyz`."""
        spool = None
        if self.spool is not None:
            depth = self.spool.depth
            spool = {
                "records": depth.records,
                "bytes": depth.bytes,
                "accepting": self.spool.accepting,
            }
        return {"broker": "connected" if self.publisher.ready else "disconnected", "spool": spool}
