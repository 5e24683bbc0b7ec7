"""`consumers tail`: every event as it is published, from queues of its own, losing none.

A queue bound to the events exchange counts as a destination: an event that reaches
it is no longer "unrouted", and the alternate exchange would not keep it. So the tail
never binds a pattern of its own. It sees:

- events that reach consumers, through a queue bound to exactly the patterns the
  consumers' binding records name (refreshed as they change);
- every other event, through a queue bound to the `{prefix}.unrouted` fanout
  exchange beside the `.unrouted` queue.

A consumer writes its record before it unbinds a pattern, so the records never name
a pattern that is not bound. After each batch it reads the records again: an event
that none of them matches reached no consumer (its pattern was being unbound), and
the tail puts it in `.unrouted` itself, as the alternate exchange would have. Both
queues are exclusive: the broker deletes them when the tail's connection ends, however
it ends. The tail's own filter (its PATTERNs) applies only to what it prints.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from pamqp.common import FieldTable

from consumers.patterns import matches
from consumers.prune import depth
from consumers.registry import registry_queue, rewrite
from consumers.topology import ConsumerQueues
from consumers.transfer import exact_copy, peek
from service.bus import BusNames
from service.topology import declare_receiver_topology

# A tail that falls this far behind drops its oldest copies, never the broker's memory.
MAX_WAITING = 10_000
BATCH_SECONDS = 0.2
# How soon a consumer that starts binding patterns shows in the tail.
REFRESH_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Seen:
    """One event the tail saw, and whether it reached no consumer."""

    message: AbstractIncomingMessage
    unrouted: bool


async def consumer_patterns(connection: AbstractConnection, names: BusNames) -> set[str]:
    """Every pattern the registered consumers' binding records name now."""
    if await depth(connection, registry_queue(names)) is None:
        return set()
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        patterns: set[str] = set()

        def see(message: AbstractIncomingMessage) -> None:
            with contextlib.suppress(orjson.JSONDecodeError, TypeError):
                patterns.update(str(p) for p in orjson.loads(message.body))

        for name in await rewrite(channel, names):
            record = ConsumerQueues(names.prefix, name).bindings
            if await depth(connection, record) is not None:
                await peek(channel, record, 10, see)
        return patterns
    finally:
        await channel.close()


class Tail:
    """Watches one prefix's events until `stop` is set, calling `show` for each."""

    def __init__(
        self,
        connection: AbstractConnection,
        names: BusNames,
        show: Callable[[Seen], object],
        *,
        patterns: tuple[str, ...] = ("#",),
    ) -> None:
        self._connection = connection
        self._names = names
        self._show = show
        self._patterns = patterns
        self._bound: set[str] = set()

    def _wanted(self, routing_key: str) -> bool:
        return any(matches(pattern, routing_key) for pattern in self._patterns)

    async def run(self, stop: asyncio.Event) -> list[str]:
        """Watch until `stop`; return the names of the queues it used (gone once closed)."""
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_receiver_topology(channel, self._names)
        arguments: FieldTable = {"x-max-length": MAX_WAITING, "x-overflow": "drop-head"}
        routed = await channel.declare_queue(exclusive=True, arguments=arguments)
        unrouted = await channel.declare_queue(exclusive=True, arguments=arguments)
        await unrouted.bind(self._names.unrouted)
        await self._follow_bindings(routed, await consumer_patterns(self._connection, self._names))
        arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

        async def on_unrouted(message: AbstractIncomingMessage) -> None:
            if self._wanted(message.routing_key or ""):
                self._show(Seen(message, unrouted=True))

        await unrouted.consume(on_unrouted, no_ack=True)
        await routed.consume(arrived.put)
        watching = asyncio.create_task(self._watch(channel, routed, arrived, stop))
        await stop.wait()
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await channel.close()
        return [routed.name, unrouted.name]

    async def _follow_bindings(self, queue: AbstractQueue, patterns: set[str]) -> None:
        for pattern in sorted(patterns - self._bound):
            await queue.bind(self._names.events, routing_key=pattern)
        for pattern in sorted(self._bound - patterns):
            await queue.unbind(self._names.events, routing_key=pattern)
        self._bound = set(patterns)

    async def _watch(
        self,
        channel: AbstractChannel,
        routed: AbstractQueue,
        arrived: asyncio.Queue[AbstractIncomingMessage],
        stop: asyncio.Event,
    ) -> None:
        keeper = await channel.get_exchange(self._names.unrouted)
        while not stop.is_set():
            try:
                first = await asyncio.wait_for(arrived.get(), REFRESH_SECONDS)
            except TimeoutError:
                # Consumers bound since show here too.
                await self._follow_bindings(
                    routed, await consumer_patterns(self._connection, self._names)
                )
                continue
            batch = [first]
            await asyncio.sleep(BATCH_SECONDS)
            while not arrived.empty():
                batch.append(arrived.get_nowait())
            # Read the records after the events arrived: any unbind before them shows.
            patterns = await consumer_patterns(self._connection, self._names)
            for message in batch:
                key = message.routing_key or ""
                if any(matches(pattern, key) for pattern in patterns):
                    if self._wanted(key):
                        self._show(Seen(message, unrouted=False))
                else:
                    # It reached only this tail: keep it as the alternate exchange would.
                    # The copy comes back through the unrouted queue and is shown then.
                    await keeper.publish(exact_copy(message), routing_key=key, mandatory=True)
                await message.ack()
            await self._follow_bindings(routed, patterns)
