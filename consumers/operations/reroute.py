"""Rerouting: send the events held in `{prefix}.unrouted` back through the events exchange.

Once a consumer binds a new event type, the events of that type that arrived before
wait in `.unrouted`. Each is published again to `{prefix}.events` as it was first
published (same routing key, properties and headers), and acked in `.unrouted` only
after the broker confirmed the copy. What is still bound to nothing goes back to
`.unrouted` through the alternate exchange, behind the rest; only the messages there
at the start are moved, so that cannot go on for ever.
"""

from __future__ import annotations

from dataclasses import dataclass

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from consumers.operations.transfer import exact_copy, transfer
from service.shared.bus import BusNames


@dataclass(frozen=True, slots=True)
class Rerouted:
    """How many events were sent through again, and how many wait in `.unrouted` now."""

    moved: int
    still_unrouted: int


async def reroute(channel: AbstractChannel, names: BusNames, limit: int | None = None) -> Rerouted:
    """Move up to `limit` of the events waiting in `.unrouted`; `channel` has confirms."""
    events = await channel.get_exchange(names.events)

    async def send(message: AbstractIncomingMessage) -> None:
        await events.publish(exact_copy(message), routing_key=message.routing_key or "")

    moved = await transfer(channel, names.unrouted, limit, send)
    after = await channel.declare_queue(names.unrouted, passive=True)
    return Rerouted(moved, after.declaration_result.message_count or 0)
