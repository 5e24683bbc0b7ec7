"""Declaration of the receiver's part of the bus; idempotent, so replicas may start together."""

from __future__ import annotations

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel
from pamqp.common import FieldTable

from service.shared.bus import BusNames

QUORUM: FieldTable = {"x-queue-type": "quorum"}


async def declare_receiver_topology(channel: AbstractChannel, names: BusNames) -> None:
    """Declare the events exchange, its alternate exchange and queue, and the quarantine queue."""
    unrouted = await channel.declare_exchange(names.unrouted, ExchangeType.FANOUT, durable=True)
    unrouted_queue = await channel.declare_queue(names.unrouted, durable=True, arguments=QUORUM)
    await unrouted_queue.bind(unrouted)
    await channel.declare_exchange(
        names.events,
        ExchangeType.TOPIC,
        durable=True,
        arguments={"alternate-exchange": names.unrouted},
    )
    await channel.declare_queue(names.invalid, durable=True, arguments=QUORUM)
