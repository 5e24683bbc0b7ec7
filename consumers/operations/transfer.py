"""Taking messages from a queue without handing any back: the base of peek, move and reroute.

RabbitMQ counts every message handed back to a quorum queue (a requeue, a closed
channel) toward its delivery limit, 20 by default since 4.0 and whatever a policy
says before that, and drops or dead-letters the message past it. A queue that holds
messages for people (`.dead`, `.unrouted`, `.invalid`) has nowhere to send them. So
every tool here takes a message, publishes what it makes of it (a copy to the same
queue, to another queue, or through the events exchange), waits for the confirm, and
only then acks the original. Only the messages there at the start are taken, so a
copy that comes back to the same queue does not keep it going.

`peek` looks at a queue that way: each message goes back as an exact copy, a new
message with a delivery count of zero. Read to the end, the queue keeps its order;
read in part, what was read moves behind the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from service.shared.confirms import OnePerId

BATCH = 100
# Set by the broker on each delivery; a copy starts without them.
_DELIVERY_HEADERS = ("x-delivery-count", "x-acquired-count")


def exact_copy(message: AbstractIncomingMessage) -> aio_pika.Message:
    """`message` as it was published: body, properties and headers, but no delivery count."""
    headers = {
        key: value for key, value in (message.headers or {}).items() if key not in _DELIVERY_HEADERS
    }
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        expiration=message.expiration,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        user_id=message.user_id,
        app_id=message.app_id,
    )


async def transfer(
    channel: AbstractChannel,
    queue_name: str,
    limit: int | None,
    forward: Callable[[AbstractIncomingMessage], Awaitable[object]],
) -> int:
    """Take up to `limit` of the messages in `queue_name` now; ack each once `forward` is done.

    `forward` publishes what becomes of a message; `channel` must have publisher confirms.
    Publishes of one message id go one at a time (see `service.shared.confirms`).
    """
    queue = await channel.declare_queue(queue_name, passive=True)
    available = queue.declaration_result.message_count or 0
    limit = available if limit is None else min(limit, available)
    one_per_id = OnePerId()

    async def one(message: AbstractIncomingMessage) -> None:
        message_id = message.message_id or ""
        mine = await one_per_id.acquire(message_id)
        try:
            await forward(message)
        finally:
            one_per_id.release(message_id, mine)
        await message.ack()

    taken = 0
    while taken < limit:
        batch: list[AbstractIncomingMessage] = []
        while len(batch) < min(BATCH, limit - taken):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            batch.append(message)
        if not batch:
            break
        await asyncio.gather(*(one(message) for message in batch))
        taken += len(batch)
    return taken


async def peek(
    channel: AbstractChannel,
    queue_name: str,
    limit: int,
    see: Callable[[AbstractIncomingMessage], object],
) -> int:
    """Show `see` up to `limit` messages of `queue_name`, putting each back as a copy."""

    async def put_back(message: AbstractIncomingMessage) -> None:
        await channel.default_exchange.publish(
            exact_copy(message), routing_key=queue_name, mandatory=True
        )
        see(message)

    return await transfer(channel, queue_name, limit, put_back)
