"""What each consumer handled and what failed in the last five minutes, from the workers' reports.

Workers append their running totals to `{prefix}.stats.log` (`consumers.runtime.reports`).
The console follows that stream from a little over five minutes back and keeps, per
worker, its reports since then. A consumer's count over the window is, summed over its
workers, the latest total less the total of the last report before the window (zero
for a worker started within it). A worker that stopped reporting counts what it
reported until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from consumers.runtime import reports, streams
from consumers.runtime.reports import Report
from service.shared.bus import BusNames

log = structlog.get_logger("consumers.console")

WINDOW = 300.0
# Far enough back to find each worker's report from before the window (one a minute).
LOOKBACK = WINDOW + reports.HEARTBEAT + 30
FAILED = ("retried", "dead", "rejected")
RETRY_PAUSE = 2.0


@dataclass(frozen=True, slots=True)
class Rates:
    """A consumer's counts over the window, and how many workers reported in it."""

    handled: int = 0
    failed: int = 0
    workers: int = 0


class Activity:
    """Follows the stats stream for as long as the console runs."""

    def __init__(
        self, connect: Callable[[], Awaitable[AbstractConnection]], names: BusNames
    ) -> None:
        self._connect = connect
        self._names = names
        self._by_worker: dict[str, deque[Report]] = defaultdict(deque)
        self._next_offset: int | None = None
        self.following = False

    async def follow(self) -> None:
        """Read reports until cancelled, subscribing again after a lost connection."""
        while True:
            try:
                await self._follow_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("console: following worker reports again", error_type=type(exc).__name__)
            self.following = False
            await asyncio.sleep(RETRY_PAUSE)

    async def _follow_once(self) -> None:
        connection = await self._connect()
        channel = await connection.channel()
        closed = asyncio.Event()
        channel.close_callbacks.add(lambda *_: closed.set())
        try:
            await reports.declare(connection, self._names)
            await channel.set_qos(prefetch_count=1000)
            queue = await channel.get_queue(reports.stats_stream(self._names), ensure=False)
            start: int | datetime = (
                self._next_offset
                if self._next_offset is not None
                else datetime.now(UTC) - timedelta(seconds=LOOKBACK)
            )
            await streams.consume(queue, self._read, start)
            self.following = True
            await closed.wait()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), 5)

    async def _read(self, message: AbstractIncomingMessage) -> None:
        offset = (message.headers or {}).get("x-stream-offset")
        if isinstance(offset, int):
            self._next_offset = offset + 1
        report = Report.parse(message.body)
        if report is not None:
            self._keep(report)
        await message.ack()

    def _keep(self, report: Report) -> None:
        kept = self._by_worker[f"{report.consumer}/{report.instance}"]
        kept.append(report)
        horizon = time.time() - LOOKBACK
        # Keep one report from before the horizon: the baseline of the next window.
        while len(kept) > 1 and kept[1].at < horizon:
            kept.popleft()

    def rates(self, now: float | None = None) -> dict[str, Rates]:
        """Per consumer, what its workers handled and failed in the last `WINDOW` seconds."""
        now = time.time() if now is None else now
        start = now - WINDOW
        found: dict[str, Rates] = {}
        for kept in self._by_worker.values():
            latest = kept[-1]
            if latest.at < start:
                continue
            before = [r for r in kept if r.at < start]
            if before:
                base: dict[str, int] = before[-1].counts
            elif latest.started >= start:
                base = {}
            else:
                base = kept[0].counts  # reports from before the window are gone
            handled = latest.counts.get("ok", 0) - base.get("ok", 0)
            failed = sum(latest.counts.get(k, 0) - base.get(k, 0) for k in FAILED)
            was = found.get(latest.consumer, Rates())
            found[latest.consumer] = Rates(
                was.handled + max(handled, 0), was.failed + max(failed, 0), was.workers + 1
            )
        return found
