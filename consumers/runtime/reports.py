"""Each worker's counts, appended to the stream `{prefix}.stats.log` for the console.

The console's overview shows what every consumer handled and what failed in the last
five minutes, on one host or across pods, without a Prometheus to ask. Each worker
appends a small record of its running totals per consumer and outcome: when they
changed, at most every `EVERY` seconds, and at least every `HEARTBEAT` seconds, so a
reader always finds a record older than its window to count from. The stream keeps
`MAX_AGE` of records. A record that cannot be appended is skipped: reports never hold
up a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from pamqp.common import FieldTable

from consumers.runtime import streams
from service.shared.bus import BusNames
from service.shared.timing import iso_utc

log = structlog.get_logger("consumers.reports")

EVERY = 5.0
HEARTBEAT = 60.0
MAX_AGE = "15m"
STREAM: FieldTable = {
    "x-queue-type": "stream",
    "x-max-age": MAX_AGE,
    # Retention drops whole segments: small ones, so fifteen minutes means about that.
    "x-stream-max-segment-size-bytes": 1_000_000,
    "x-max-length-bytes": 50_000_000,
}


def _instance() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def stats_stream(names: BusNames) -> str:
    return f"{names.prefix}.stats.log"


async def declare(connection: AbstractConnection, names: BusNames) -> None:
    """Create the stream if need be, and return once it takes records (`consumers.runtime.streams`).

    The same arguments everywhere, or the broker refuses.
    """
    await streams.ready(connection, stats_stream(names), STREAM, create=True)


@dataclass(frozen=True, slots=True)
class Report:
    """One worker's totals for one consumer since the worker started."""

    consumer: str
    instance: str
    started: float  # Unix seconds
    at: float
    counts: dict[str, int]

    @classmethod
    def parse(cls, body: bytes) -> Report | None:
        """The report in `body`, or None when it is not one (a later version's, garbage)."""
        try:
            data = orjson.loads(body)
            counts = data["counts"]
            return cls(
                str(data["consumer"]),
                str(data["instance"]),
                datetime.fromisoformat(data["started"]).timestamp(),
                datetime.fromisoformat(data["at"]).timestamp(),
                {str(k): int(v) for k, v in counts.items()},
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


@dataclass(slots=True)
class Reporter:
    """Appends a worker's totals (`tally`, kept by its metrics) to the stats stream."""

    names: BusNames
    consumers: tuple[str, ...]
    tally: Counter[tuple[str, str]]
    instance: str = field(default_factory=lambda: _instance())
    started: str = field(default_factory=lambda: iso_utc(datetime.now(UTC)))
    _sent: dict[tuple[str, str], int] = field(default_factory=dict)
    _last: float = 0.0

    async def run(self, connection: AbstractConnection) -> None:
        """Report until cancelled, on a channel of `connection` (the worker declared the stream)."""
        channel = await connection.channel(publisher_confirms=False)
        try:
            while True:
                await self.report(channel)
                await asyncio.sleep(EVERY)
        finally:
            await _close(channel)

    async def last_word(self, connection: AbstractConnection) -> None:
        """The totals as the worker stops, so its last seconds count too."""
        channel = await connection.channel(publisher_confirms=True)
        try:
            await self.report(channel, force=True)
        finally:
            await _close(channel)

    async def report(self, channel: AbstractChannel, *, force: bool = False) -> None:
        """Append a record per consumer when totals changed or the heartbeat is due."""
        now = time.monotonic()
        totals = dict(self.tally)
        if not force and totals == self._sent and now - self._last < HEARTBEAT:
            return
        at = iso_utc(datetime.now(UTC))
        for consumer in self.consumers:
            counts = {outcome: n for (name, outcome), n in totals.items() if name == consumer}
            body: dict[str, Any] = {
                "consumer": consumer,
                "instance": self.instance,
                "started": self.started,
                "at": at,
                "counts": counts,
            }
            await channel.default_exchange.publish(
                aio_pika.Message(orjson.dumps(body), content_type="application/json"),
                routing_key=stats_stream(self.names),
            )
        self._sent, self._last = totals, now


async def _close(channel: AbstractChannel) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(channel.close(), 5)


async def keep_reporting(reporter: Reporter, connection: AbstractConnection) -> None:
    """`reporter.run`, with any failure logged once and the reports given up for the session."""
    try:
        await reporter.run(connection)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # reports are for the console: they never stop the worker
        log.info("worker reports stopped for this connection", error_type=type(exc).__name__)
