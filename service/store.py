"""Durable storage of a delivery: confirmed by the broker, or else fsynced to the local spool."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import structlog

from service.publishing.publisher import Publisher
from service.shared.bus import Outgoing
from service.shared.errors import PublishFailed
from service.shared.supervise import keep_running, stop
from service.spool.drain import Drainer, DrainStatus
from service.spool.segments import Spool

Where = Literal["broker", "spool"]

log = structlog.get_logger("service.store")


class DurableStore:
    """Where the receiver puts each delivery before answering 200.

    Without a spool directory, only a broker confirm counts and anything else is a
    `PublishFailed`. With one, a delivery the broker does not confirm in time is
    appended to the spool, and a supervised background task republishes the spool
    once the broker is back.
    """

    def __init__(
        self,
        publisher: Publisher,
        *,
        spool_dir: Path | None = None,
        spool_max_bytes: int = 0,
        on_drained: Callable[[int], object] = lambda count: None,
        on_drain_failure: Callable[[str], object] = lambda cause: None,
        on_crash: Callable[[str], object] = lambda task: None,
        tracer: Any = None,
    ) -> None:
        self.publisher = publisher
        self._tracer = tracer
        # Imported only while tracing is on, and once: not on every delivery.
        self._spans: ModuleType | None = None
        if tracer is not None:
            from service.observability import spans

            self._spans = spans
        self._on_drained = on_drained
        self._on_drain_failure = on_drain_failure
        self._on_crash = on_crash
        self.spool: Spool | None = None
        self.drainer: Drainer | None = None
        self._spool_dir = spool_dir
        self._spool_max_bytes = spool_max_bytes
        self._drain_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the spool (raises `SpoolUnusable` if it cannot be had), then connect."""
        if self._spool_dir is not None:
            self.spool = Spool.open(self._spool_dir, max_bytes=self._spool_max_bytes)
        await self.publisher.start()
        if self.spool is not None:
            publish: Callable[[Outgoing], Awaitable[None]] = self.publisher.publish
            if self._spans is not None:
                publish = self._spans.draining(self._tracer, publish)
            self.drainer = Drainer(
                self.spool,
                publish,
                lambda: self.publisher.ready,
                on_drained=self._on_drained,
                on_failure=self._on_drain_failure,
            )
            self._drain_task = keep_running(
                "spool-drainer", self.drainer.run, on_crash=self._on_crash
            )

    async def close(self) -> None:
        """Stop draining and close; spooled records stay on disk for the next start.

        Every step runs, whatever an earlier one raised; nothing is raised from here.
        """
        await stop(self._drain_task)
        if self.spool is not None:
            try:
                await self.spool.close()
            except Exception:
                log.exception("closing the spool failed")
        try:
            await self.publisher.close()
        except Exception:
            log.exception("closing the broker connection failed")

    @property
    def ready(self) -> bool:
        """Whether a delivery can be stored durably now."""
        return self.publisher.ready or (self.spool is not None and self.spool.accepting)

    async def store(self, message: Outgoing) -> tuple[Where, str | None]:
        """Store `message`: where, and why not on the broker (the publish's error), if so.

        Raises `PublishFailed` or `SpoolError` when neither place takes it.
        """
        if self._spans is not None and not self._spans.carried_unsampled(message):
            spool = self.spool.append if self.spool is not None else None
            traced: tuple[Where, str | None] = await self._spans.store(
                self._tracer, message, self.publisher.publish, spool
            )
            return traced
        try:
            await self.publisher.publish(message)
        except PublishFailed as failure:
            if self.spool is None:
                raise
            await self.spool.append(message)
            return "spool", type(failure).__name__
        return "broker", None

    def drain_status(self) -> DrainStatus | None:
        return self.drainer.status() if self.drainer is not None else None

    def status(self) -> dict[str, Any]:
        """The readiness details for `/readyz`."""
        spool = None
        if self.spool is not None:
            depth = self.spool.depth
            spool = {
                "records": depth.records,
                "bytes": depth.bytes,
                "accepting": self.spool.accepting,
                "write_error": self.spool.write_error,
            }
            drain = self.drain_status()
            if drain is not None:
                spool.update(drain=str(drain.state), drain_error=drain.error, parked=drain.parked)
        return {"broker": self.publisher.state, "spool": spool}
