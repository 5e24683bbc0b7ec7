"""Each consumer's queues: a quorum queue, retry delay queues and dead letters.

Bindings follow the code: `declare_consumer_topology` binds the patterns the code
names; what an earlier version bound and the code no longer names is unbound by the
worker once the registry records the change (`consumers.operations.registry.enrol`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aio_pika.abc import AbstractChannel, AbstractQueue
from pamqp.common import FieldTable

from consumers.consumer import Consumer
from service.shared.bus import BusNames
from service.shared.topology import QUORUM, declare_receiver_topology

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
        """Where earlier versions recorded the bound patterns (now in the registry)."""
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
    """Declare every queue of `consumer`, bind its patterns, and return its main queue."""
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
    # Bind through the plain channel: a robust queue would re-bind every pattern it ever
    # bound after a reconnect, undoing an unbind made by a newer replica.
    underlay = await channel.get_underlay_channel()
    for pattern in consumer.patterns:
        await underlay.queue_bind(main.name, names.events, routing_key=pattern)
    return main


async def unbind(
    channel: AbstractChannel, queue: str, exchange: str, patterns: Iterable[str]
) -> tuple[str, ...]:
    """Unbind `patterns` from `queue`; return them, sorted."""
    removed = tuple(sorted(patterns))
    underlay = await channel.get_underlay_channel()
    for pattern in removed:
        await underlay.queue_unbind(queue, exchange, routing_key=pattern)
    return removed
