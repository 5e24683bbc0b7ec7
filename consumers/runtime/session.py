"""A worker's link to the broker: two connections to one node of AMQP_URL's list.

Consuming and publishing copies go on separate connections. During a memory or
disk alarm RabbitMQ stops reading from a connection that publishes, acks and nacks
included; a connection that only consumes is never blocked, so handlers go on and
their messages are settled while copies wait. When either connection is lost, the
worker opens a new session on the next node (`service.shared.brokers`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection

from service.shared import blocking, brokers
from service.shared.brokers import Nodes
from service.shared.timing import backoff

log = structlog.get_logger("consumers.session")

CONNECT_TIMEOUT = 10.0
CONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)
CLOSE_TIMEOUT = 5.0


@dataclass(eq=False)
class Session:
    """The consuming and the publishing connection to one node."""

    consuming: AbstractConnection
    publishing: AbstractConnection
    node: str  # for log lines: no credentials
    # Why the broker blocks the publishing connection (an alarm), while it does.
    blocked: str | None = field(default=None, init=False)
    _gone: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def __post_init__(self) -> None:
        # aio-pika marks a plain connection closed only when it is closed from this
        # side; its close callbacks run however it ends.
        for connection in (self.consuming, self.publishing):
            connection.close_callbacks.add(lambda *_: self._gone.set())

    @property
    def is_closed(self) -> bool:
        return self._gone.is_set()

    async def lost(self) -> None:
        """Return once either connection has closed."""
        await self._gone.wait()

    async def watch(self, channel: AbstractChannel) -> None:
        """Follow `connection.blocked` on the publishing connection, `channel` being on it."""
        underlay = await channel.get_underlay_channel()
        blocking.watch(underlay.connection, self._on_blocking)

    def _on_blocking(self, reason: str | None) -> None:
        self.blocked = reason
        if reason is not None:
            log.warning(
                "broker blocked publishing; copies wait and their messages go back meanwhile",
                broker=self.node,
                reason=reason,
            )
        else:
            log.info("broker unblocked", broker=self.node)

    async def close(self) -> None:
        """Close both, each bounded: without a link a close cannot finish."""
        for connection in (self.publishing, self.consuming):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT)


async def _open(url: str) -> Session:
    async with asyncio.timeout(CONNECT_TIMEOUT):
        consuming = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            publishing = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT)
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consuming.close(), CLOSE_TIMEOUT)
        raise
    return Session(consuming, publishing, brokers.display(url))


async def open_session(nodes: Nodes, stop: asyncio.Event) -> Session | None:
    """A session on the first node that answers, retrying until one does or `stop` is set."""
    failures = 0
    while not stop.is_set():
        try:
            return await brokers.first_answer(nodes, _open)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            if failures == 0:
                log.warning(
                    "broker unreachable; retrying", broker=nodes.listed, error=type(exc).__name__
                )
            delay = backoff(CONNECT_DELAYS, failures)
            failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    return None
