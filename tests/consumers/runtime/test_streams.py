"""Streams created by several processes at once are used only once they run."""

from __future__ import annotations

import uuid

import aio_pika
import pytest

from consumers.runtime import streams
from consumers.runtime.reports import STREAM
from tests.support import AMQP_URL, BusView, all_at_once, connections

pytestmark = pytest.mark.rabbit


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """A record that reached the consumer before it was cancelled."""


async def _ready_and_used(connection: aio_pika.abc.AbstractConnection, stream: str) -> None:
    assert await streams.ready(connection, stream, STREAM, create=True)
    channel = await connection.channel(publisher_confirms=True)
    await channel.default_exchange.publish(
        aio_pika.Message(b"{}", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
        routing_key=stream,
    )
    await channel.set_qos(prefetch_count=10)
    queue = await channel.get_queue(stream, ensure=False)
    await queue.cancel(await queue.consume(_ignore))
    await channel.close()


async def test_processes_creating_a_stream_at_once_each_publish_and_consume_at_once(
    bus: BusView,
) -> None:
    # Publishing to a stream another connection was still creating closed the publisher's
    # connection (INTERNAL_ERROR) in 13 tries of 40 here; so did a consumer, less often.
    async with connections(4) as opened:
        for attempt in range(10):
            stream = f"{bus.names.prefix}.race-{uuid.uuid4().hex[:6]}.log"
            bus.forget_later(stream)
            await all_at_once(opened, (_ready_and_used(c, stream) for c in opened), attempt)


async def test_a_stream_nobody_creates_is_reported_missing_and_not_made(bus: BusView) -> None:
    stream = f"{bus.names.prefix}.absent.log"
    async with await aio_pika.connect(AMQP_URL) as connection:
        assert not await streams.ready(connection, stream, STREAM, create=False)
        assert not await streams.exists(connection, stream)


async def test_a_creation_held_too_long_fails_with_the_stream_named(
    bus: BusView, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = f"{bus.names.prefix}.held.log"
    monkeypatch.setattr(streams, "CREATED_WITHIN", 0.5)
    async with (
        await aio_pika.connect(AMQP_URL) as holder,
        await aio_pika.connect(AMQP_URL) as waiter,
    ):
        # A process that took the creation and never finished (but is still connected).
        channel = await holder.channel()
        await channel.declare_queue(f"{stream}.creating", exclusive=True, auto_delete=True)
        with pytest.raises(streams.StreamNotCreated, match=stream):
            await streams.ready(waiter, stream, STREAM, create=True)
        await holder.close()  # its exclusive queue goes with it: the next one creates
        assert await streams.ready(waiter, stream, STREAM, create=True)
    bus.forget_later(stream)
