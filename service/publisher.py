"""Confirmed publishing to RabbitMQ, behind one small seam.

The receiver keeps its own connection loop rather than aio-pika's robust
connection: it must know at every moment whether a confirm is possible, to
answer `/readyz` and to fail fast with 503, while a robust channel makes a
publish wait for the reconnection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

import aio_pika
import aiormq
import structlog
from aiormq import spec
from aiormq.abc import AbstractChannel
from yarl import URL

from service.bus import BusNames, Outgoing
from service.confirms import OnePerId
from service.errors import (
    BrokerUnavailable,
    PublishNacked,
    PublishReturned,
    PublishTimeout,
)
from service.settings import display_url
from service.supervise import keep_running, stop
from service.timing import backoff
from service.topology import declare_receiver_topology

log = structlog.get_logger("service.publisher")

# A stalled link is noticed after about two heartbeats, unless AMQP_URL sets its own.
DEFAULT_HEARTBEAT = 10
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)


class Publisher(Protocol):
    """What the HTTP handler needs from the bus."""

    @property
    def ready(self) -> bool:
        """True while a publish can be confirmed."""

    async def start(self) -> None:
        """Begin connecting; returns without waiting for the broker."""

    async def close(self) -> None:
        """Stop and release the connection."""

    async def publish(self, message: Outgoing) -> None:
        """Return once the broker confirmed the message; raise `PublishFailed` otherwise."""


class AmqpPublisher:
    """Publishes persistent, mandatory messages with confirms over one supervised connection."""

    def __init__(
        self,
        url: str,
        names: BusNames,
        *,
        timeout: float,
        on_crash: Callable[[str], object] = lambda task: None,
    ) -> None:
        parsed = URL(url)
        if "heartbeat" not in parsed.query:
            parsed = parsed.update_query(heartbeat=DEFAULT_HEARTBEAT)
        self._url = parsed
        self._names = names
        self._timeout = timeout
        self._channel: AbstractChannel | None = None
        self._one_per_id = OnePerId()
        self._supervisor: asyncio.Task[None] | None = None
        self._on_crash = on_crash

    def __repr__(self) -> str:
        return f"AmqpPublisher(prefix={self._names.prefix!r}, ready={self.ready})"

    @property
    def ready(self) -> bool:
        channel = self._channel
        return channel is not None and not channel.is_closed

    async def start(self) -> None:
        self._supervisor = keep_running("amqp-publisher", self._supervise, on_crash=self._on_crash)

    async def close(self) -> None:
        await stop(self._supervisor)
        self._supervisor = None
        self._channel = None

    async def publish(self, message: Outgoing) -> None:
        channel = self._channel
        if channel is None or channel.is_closed:
            raise BrokerUnavailable
        message_id = message.message_id
        try:
            async with asyncio.timeout(self._timeout):
                mine = await self._one_per_id.acquire(message_id)
                try:
                    confirm = await channel.basic_publish(
                        message.body,
                        exchange=message.exchange,
                        routing_key=message.routing_key,
                        properties=message.properties,
                        mandatory=True,
                    )
                finally:
                    self._one_per_id.release(message_id, mine)
        except TimeoutError:
            raise PublishTimeout from None
        except aiormq.exceptions.PublishError:
            raise PublishReturned from None
        except aiormq.exceptions.DeliveryError:
            raise PublishNacked from None
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError):
            # RuntimeError covers aiormq's ChannelInvalidStateError on a closing channel.
            raise BrokerUnavailable from None
        if not isinstance(confirm, spec.Basic.Ack):
            raise PublishNacked

    async def _supervise(self) -> None:
        """Connect, declare, and hold the channel until it closes; then start again."""
        failures = 0
        while True:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    connection = await aio_pika.connect(self._url, timeout=CONNECT_TIMEOUT)
            except Exception as exc:
                # Any failure to connect, of whatever type, means: wait and try again.
                if failures == 0:
                    log.warning(
                        "broker unreachable",
                        broker=display_url(self._url),
                        error=type(exc).__name__,
                    )
                await asyncio.sleep(backoff(RECONNECT_DELAYS, failures))
                failures += 1
                continue
            try:
                await self._hold(connection)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("broker session failed", error=type(exc).__name__, detail=str(exc))
                failures += 1
            finally:
                self._channel = None
                # Closing a connection whose link just died can hang; never let it stop
                # the loop from connecting again.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(connection.close()), CLOSE_TIMEOUT)
            await asyncio.sleep(backoff(RECONNECT_DELAYS, failures))

    async def _hold(self, connection: aio_pika.abc.AbstractConnection) -> None:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_receiver_topology(channel, self._names)
        underlay = await channel.get_underlay_channel()
        self._channel = underlay
        log.info("broker connected", broker=display_url(self._url), prefix=self._names.prefix)
        await asyncio.wait([underlay.closing])
        log.warning("broker connection lost")
