"""Each consumer's queues: a quorum queue, retry delay queues and dead letters.

Bindings follow the code. AMQP cannot list a queue's bindings, so each consumer
keeps a record of the patterns it bound in the small queue
`{prefix}.{name}.bindings`. At start the worker reads that record, binds the current
patterns, writes the new record, and only then unbinds the patterns no longer in the
code: the record never names a pattern that is not bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pamqp.common import FieldTable

from consumers.consumer import Consumer
from service.bus import BusNames
from service.topology import QUORUM, declare_receiver_topology

# A message that kills its worker again and again goes to `.dead` instead of looping.
# Returns after a broker fault count too, so the limit leaves room for long outages.
DELIVERY_LIMIT = 50


@dataclass(frozen=True, slots=True)
class ConsumerQueues:
    """The names of one consumer's queues."""

    prefix: str
    consumer: str

    @property
    def main(self) -> str:
        return f"{self.prefix}.{self.consumer}"

    @property
    def dead(self) -> str:
        return f"{self.main}.dead"

    @property
    def bindings(self) -> str:
        return f"{self.main}.bindings"

    def retry(self, delay: float) -> str:
        ms = retry_ttl_ms(delay)
        return f"{self.main}.retry.{ms // 1000}s" if ms % 1000 == 0 else f"{self.main}.retry.{ms}ms"


def retry_ttl_ms(delay: float) -> int:
    """The queue TTL for a retry delay given in seconds."""
    return max(1, round(delay * 1000))


def _dead_lettering(target: str) -> FieldTable:
    # At-least-once dead-lettering keeps a message until its target queue confirms it.
    return {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": target,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_consumer_topology(
    channel: AbstractChannel, names: BusNames, consumer: Consumer
) -> AbstractQueue:
    """Declare every queue of `consumer`, sync its bindings, and return its main queue."""
    await declare_receiver_topology(channel, names)
    queues = ConsumerQueues(names.prefix, consumer.name)
    await channel.declare_queue(queues.dead, durable=True, arguments=QUORUM)
    main = await channel.declare_queue(
        queues.main,
        durable=True,
        arguments={**QUORUM, "x-delivery-limit": DELIVERY_LIMIT, **_dead_lettering(queues.dead)},
    )
    for delay in sorted(set(consumer.retry_delays)):
        await channel.declare_queue(
            queues.retry(delay),
            durable=True,
            arguments={
                **QUORUM,
                "x-message-ttl": retry_ttl_ms(delay),
                **_dead_lettering(queues.main),
            },
        )
    await sync_bindings(channel, main, names.events, queues.bindings, consumer.patterns)
    return main


async def sync_bindings(
    channel: AbstractChannel,
    queue: AbstractQueue,
    exchange: str,
    record_queue: str,
    patterns: tuple[str, ...],
) -> tuple[str, ...]:
    """Bind `patterns`, unbind the recorded ones beyond them; return those it unbound."""
    record = await channel.declare_queue(record_queue, durable=True, arguments=QUORUM)
    previous: list[AbstractIncomingMessage] = []
    while (message := await record.get(no_ack=False, fail=False)) is not None:
        previous.append(message)
    bound_before: set[str] = set()
    for message in previous:
        try:
            bound_before.update(str(p) for p in orjson.loads(message.body))
        except (orjson.JSONDecodeError, TypeError):
            continue
    # Bind through the plain channel: a robust queue would re-bind every pattern it ever
    # bound after a reconnect, undoing an unbind made by a newer replica.
    underlay = await channel.get_underlay_channel()
    for pattern in patterns:
        await underlay.queue_bind(queue.name, exchange, routing_key=pattern)
    # The record changes before anything is unbound: `consumers tail` decides by the
    # records whether an event reached a consumer (see `consumers.tail`).
    await channel.default_exchange.publish(
        aio_pika.Message(
            orjson.dumps(list(patterns)), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        ),
        routing_key=record_queue,
    )
    for message in previous:
        await message.ack()
    removed = tuple(sorted(bound_before - set(patterns)))
    for pattern in removed:
        await underlay.queue_unbind(queue.name, exchange, routing_key=pattern)
    return removed
