"""Consumer names on the command line: one whose queue the bus lacks is a usage error."""

from __future__ import annotations

from collections.abc import Iterable

from aio_pika.abc import AbstractConnection

from consumers.errors import UnknownConsumer
from consumers.operations.prune import depth
from consumers.operations.registry import known_consumers
from consumers.topology import ConsumerQueues
from service.shared.bus import BusNames


async def require(
    connection: AbstractConnection,
    names: BusNames,
    consumers: Iterable[str],
    *,
    registered: bool = False,
) -> None:
    """Raise `UnknownConsumer`, naming those the registry knows, unless each has a queue.

    With `registered`, a name the registry still holds will do without its queue: `prune`
    finishes retiring a consumer whose queue is already gone.
    """
    for name in consumers:
        queue = ConsumerQueues(names.prefix, name).main
        if await depth(connection, queue) is not None:
            continue
        known = await known_consumers(connection, names)
        if registered and name in known:
            continue
        gone = f": the registry names it, but there is no queue {queue}" if name in known else ""
        listed = ", ".join(known) or "none"
        raise UnknownConsumer(
            f"no consumer {name}{gone}\nknown consumers under {names.prefix!r}: {listed}"
        )
