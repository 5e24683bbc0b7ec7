"""`consumers tail`: every event as it is published, from queues of its own, losing none.

A queue bound to the events exchange counts as a destination: an event that reaches
it is no longer "unrouted", and the alternate exchange would not keep it. So the tail
never binds a pattern of its own. It sees:

- events that reach consumers, through a queue bound to exactly the patterns the
  registry names (`consumers.operations.registry`, followed as it changes);
- every other event, through a queue bound to the `{prefix}.unrouted` fanout
  exchange beside the `.unrouted` queue.

A consumer writes its record before it unbinds a pattern, so the registry never names
a pattern that is not bound. After each batch it reads the registry up to now: an event
that none of them matches reached no consumer (its pattern was being unbound), and
the tail puts it in `.unrouted` itself, as the alternate exchange would have. Both
queues are exclusive: the broker deletes them when the tail's connection ends, however
it ends. The tail's own filter (its PATTERNs) applies only to what it prints.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from pamqp.common import FieldTable

from consumers.operations.registry import Follower
from consumers.operations.transfer import exact_copy
from consumers.patterns import matches
from service.shared.bus import BusNames
from service.shared.topology import declare_receiver_topology

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
        self._registry = Follower(connection, names)
        self._following = False

    async def _consumer_patterns(self, *, up_to_now: bool) -> set[str]:
        """The patterns the registered consumers bind; `up_to_now` reads to the log's end."""
        if not self._following:
            # No worker has started under this prefix yet; one may at any time.
            self._following = await self._registry.start()
            up_to_now = self._following
        if up_to_now:
            await self._registry.sync()
        return self._registry.patterns()

    def _wanted(self, routing_key: str) -> bool:
        return any(matches(pattern, routing_key) for pattern in self._patterns)

    async def run(
        self, stop: asyncio.Event, ready: Callable[[], object] | None = None
    ) -> list[str]:
        """Watch until `stop`; return the names of the queues it used (gone once closed).

        `ready` is called once both queues are bound and consumed from: every event
        published after that is seen.
        """
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_receiver_topology(channel, self._names)
        arguments: FieldTable = {"x-max-length": MAX_WAITING, "x-overflow": "drop-head"}
        routed = await channel.declare_queue(exclusive=True, arguments=arguments)
        unrouted = await channel.declare_queue(exclusive=True, arguments=arguments)
        await unrouted.bind(self._names.unrouted)
        await self._follow_bindings(routed, await self._consumer_patterns(up_to_now=True))
        arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

        async def on_unrouted(message: AbstractIncomingMessage) -> None:
            if self._wanted(message.routing_key or ""):
                self._show(Seen(message, unrouted=True))

        await unrouted.consume(on_unrouted, no_ack=True)
        await routed.consume(arrived.put)
        if ready is not None:
            ready()
        watching = asyncio.create_task(self._watch(channel, routed, arrived, stop))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({watching, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        watching.cancel()
        await asyncio.gather(watching, stopping, return_exceptions=True)
        if watching.done() and not watching.cancelled() and watching.exception() is not None:
            raise watching.exception()  # type: ignore[misc]  # the caller connects again
        await self._registry.close()
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
                # Consumers bound since show here too (the log is followed as it grows).
                await self._follow_bindings(routed, await self._consumer_patterns(up_to_now=False))
                continue
            batch = [first]
            await asyncio.sleep(BATCH_SECONDS)
            while not arrived.empty():
                batch.append(arrived.get_nowait())
            # Read the records up to now, after the events arrived: any unbind before
            # them shows.
            patterns = await self._consumer_patterns(up_to_now=True)
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
