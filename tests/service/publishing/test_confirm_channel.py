"""The fast publish path against the real broker: what it relies on in aiormq, loudly.

If an aiormq upgrade changes the internals `service.publishing.confirm_channel` uses, these fail:
acks, nacks, returns and a closing channel must all still reach the futures it hands out.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
import pytest
from aiormq.channel import Returning

from service.publishing.confirm_channel import ConfirmChannel, Incompatible
from service.shared.bus import AuthMethod, Outgoing, Receipt, event_message
from service.shared.envelope import parse
from tests.support import AMQP_URL, BusView
from tests.tools.tcp_proxy import TcpProxy

pytestmark = pytest.mark.rabbit


def outgoing(bus: BusView, n: int) -> Outgoing:
    body = json.dumps({"EventName": "talent_created", "CorrelationId": f"fast-{n}"}).encode()
    receipt = Receipt(str(uuid.uuid4()), AuthMethod.API_KEY, datetime.now(UTC))
    return event_message(bus.names, parse(body), body, receipt)


async def confirm_channel(
    url: str = AMQP_URL,
) -> tuple[aio_pika.abc.AbstractConnection, ConfirmChannel]:
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    return connection, ConfirmChannel(await channel.get_underlay_channel())


async def test_it_refuses_a_channel_without_confirms() -> None:
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel(publisher_confirms=False)
        with pytest.raises(Incompatible, match="without publisher confirms"):
            ConfirmChannel(await channel.get_underlay_channel())


async def test_a_thousand_publishes_are_acked_and_arrive_exactly_as_aiormq_would_send_them(
    bus: BusView,
) -> None:
    probe = await bus.probe("#")
    messages = [outgoing(bus, n) for n in range(1000)]
    connection, fast = await confirm_channel()
    async with connection:
        answers = await asyncio.gather(*(fast.publish(m) for m in messages))
    assert all(isinstance(a, aiormq.spec.Basic.Ack) for a in answers)
    received = [await bus.get(probe) for _ in messages]
    for message, got in zip(messages, received, strict=True):
        sent = message.properties
        assert got.body == message.body
        assert (got.message_id, got.type, got.content_type) == (
            sent.message_id,
            sent.message_type,
            sent.content_type,
        )
        assert got.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert got.headers == sent.headers
        assert sent.timestamp is not None
        assert got.timestamp == sent.timestamp.replace(microsecond=0)


async def test_a_nack_and_a_return_reach_their_futures(bus: BusView) -> None:
    await bus.declare()
    full = f"{bus.names.prefix}.full"
    bus.forget_later(full)
    # A queue that takes nothing: the broker nacks every publish routed to it.
    await bus.channel.declare_queue(
        full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    await (await bus.queue(full)).bind(bus.names.events, "talent.#")
    connection, fast = await confirm_channel()
    async with connection:
        with pytest.raises(aiormq.exceptions.DeliveryError):
            await fast.publish(outgoing(bus, 1))
        sent = outgoing(bus, 2)
        lost = Outgoing("", f"{bus.names.prefix}.no-such-queue", sent.body, sent.properties)
        with pytest.raises(aiormq.exceptions.PublishError):
            await fast.publish(lost)


async def test_publishes_in_flight_fail_when_the_channel_goes(
    bus: BusView, proxy: TcpProxy
) -> None:
    await bus.declare()
    connection, fast = await confirm_channel(proxy.url_for(AMQP_URL))
    proxy.stall()  # nothing gets through: no confirm can come
    pending = [fast.publish(outgoing(bus, n)) for n in range(10)]
    await asyncio.sleep(0.2)
    await proxy.cut()
    done, _ = await asyncio.wait(pending, timeout=10)
    assert len(done) == 10  # none left waiting for ever
    assert all(future.exception() is not None for future in done)
    await asyncio.gather(connection.close(), return_exceptions=True)


async def test_a_publish_on_a_closed_channel_is_refused_at_once(bus: BusView) -> None:
    await bus.declare()
    connection, fast = await confirm_channel()
    async with connection:
        await fast.publish(outgoing(bus, 1))
        await connection.close()
        with pytest.raises(aiormq.exceptions.ChannelInvalidStateError):
            fast.publish(outgoing(bus, 2))
        assert fast.pending() == []


async def test_a_returned_publish_is_not_awaited_as_pending(bus: BusView) -> None:
    """aiormq puts a placeholder that never ends where a returned publish was, until its ack."""
    await bus.declare()
    connection, fast = await confirm_channel()
    async with connection:
        waiting = fast.publish(outgoing(bus, 1))
        channel: Any = fast._channel
        channel.confirmations[channel.delivery_tag + 1] = Returning()
        assert fast.pending() == [waiting]
        await waiting
