"""The registry: which consumers have queues under a prefix, since AMQP cannot list queues.

Each worker records its consumers, with the names of their queues, in the queue
`{prefix}.registry` when it starts. The registry is the union of the messages in
that queue. Reading it rewrites it: a reader takes every message, publishes the
union (with its own changes) as one message, then acks what it took. A concurrent
reader sees fewer messages, but writes back all it saw, so no name is ever lost;
and nothing is put back unacknowledged, so no delivery limit can drop an entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from consumers.consumer import Consumer
from consumers.topology import ConsumerQueues
from service.bus import BusNames
from service.topology import QUORUM

Entries = dict[str, tuple[str, ...]]


def registry_queue(names: BusNames) -> str:
    return f"{names.prefix}.registry"


def entry_for(prefix: str, consumer: Consumer) -> tuple[str, tuple[str, ...]]:
    """A consumer's name and every queue it declares."""
    queues = ConsumerQueues(prefix, consumer.name)
    retries = sorted({queues.retry(delay) for delay in consumer.retry_delays})
    return consumer.name, (queues.main, queues.dead, queues.bindings, *retries)


async def rewrite(
    channel: AbstractChannel,
    names: BusNames,
    *,
    add: Mapping[str, Iterable[str]] | None = None,
    remove: Iterable[str] = (),
) -> Entries:
    """Read the registry, add and remove entries, write it back; return what it now holds."""
    queue = await channel.declare_queue(registry_queue(names), durable=True, arguments=QUORUM)
    taken: list[AbstractIncomingMessage] = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        taken.append(message)
    entries: dict[str, set[str]] = {}
    for message in taken:
        for name, queues in _entries_in(message.body).items():
            entries.setdefault(name, set()).update(queues)
    for added, its_queues in (add or {}).items():
        entries.setdefault(added, set()).update(its_queues)
    for name in remove:
        entries.pop(name, None)
    result = {name: tuple(sorted(queues)) for name, queues in sorted(entries.items())}
    await channel.default_exchange.publish(
        aio_pika.Message(
            orjson.dumps({"consumers": result}), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        ),
        routing_key=queue.name,
    )
    for message in taken:
        await message.ack()
    return result


def _entries_in(body: bytes) -> dict[str, list[str]]:
    try:
        consumers = orjson.loads(body).get("consumers", {})
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    if not isinstance(consumers, dict):
        return {}
    return {
        str(name): [str(queue) for queue in queues]
        for name, queues in consumers.items()
        if isinstance(queues, list)
    }


async def known_consumers(channel: AbstractChannel, names: BusNames) -> list[str]:
    """The names of every consumer the registry holds, sorted."""
    return sorted(await rewrite(channel, names))
