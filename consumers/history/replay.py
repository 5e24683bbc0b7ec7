"""Sending stored events again to one consumer's queue, oldest first, each one confirmed.

Only events whose routing key one of the consumer's current bindings matches are sent
(the registry holds its patterns); the others are counted as skipped. Each copy is the
original message (body, id, type, time, headers) with the attempt headers of an
earlier failure left out, `x-routing-key` set so the worker routes it by the event,
and `x-replayed-from: history`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection

from consumers.event import ROUTING_KEY
from consumers.history.query import Filter, oldest_first
from consumers.history.store import Entry, HistoryStore
from consumers.operations import registry
from consumers.operations.dead import ATTEMPT_HEADERS
from consumers.patterns import matches
from consumers.topology import ConsumerQueues
from service.shared.bus import BusNames

REPLAYED_FROM = "x-replayed-from"
# Publishes awaiting their confirms at once: enough to keep the broker busy.
WINDOW = 500


@dataclass
class Progress:
    """How far a replay got; read after an interruption too."""

    replayed: int = 0
    skipped: int = 0
    last: datetime | None = None


def copy_of_entry(entry: Entry) -> aio_pika.Message:
    headers = {k: v for k, v in entry.headers.items() if not k.startswith(ATTEMPT_HEADERS)}
    headers[ROUTING_KEY] = entry.routing_key
    headers[REPLAYED_FROM] = "history"
    return aio_pika.Message(
        entry.body,
        headers=headers,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=entry.message_id,
        type=entry.event,
        timestamp=entry.received_at,
    )


async def bindings_of(
    connection: AbstractConnection, names: BusNames, consumer: str
) -> tuple[str, ...]:
    """The patterns `consumer` is bound to now, as its last start recorded them."""
    entry = (await registry.read(connection, names)).get(consumer)
    return entry.patterns if entry is not None else ()


async def replay(
    connection: AbstractConnection,
    names: BusNames,
    consumer: str,
    store: HistoryStore,
    chosen: Filter,
    progress: Progress,
    *,
    dry_run: bool = False,
    shown: Callable[[Progress], None] = lambda _: None,
) -> Progress:
    """Send every matching, bound event to `consumer`'s queue; count the rest as skipped."""
    patterns = await bindings_of(connection, names, consumer)
    queue = ConsumerQueues(names.prefix, consumer).main
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        async for page in oldest_first(store, chosen):
            bound = [e for e in page if any(matches(p, e.routing_key) for p in patterns)]
            progress.skipped += len(page) - len(bound)
            if dry_run:
                progress.replayed += len(bound)
                shown(progress)
                continue
            for start in range(0, len(bound), WINDOW):
                window = bound[start : start + WINDOW]
                await _publish(channel, queue, window)
                progress.replayed += len(window)
                progress.last = window[-1].received_at
                shown(progress)
    finally:
        await channel.close()
    return progress


async def _publish(channel: AbstractChannel, queue: str, entries: list[Entry]) -> None:
    exchange = channel.default_exchange
    await asyncio.gather(
        *(exchange.publish(copy_of_entry(e), routing_key=queue, mandatory=True) for e in entries)
    )
