"""What the overview shows: every consumer's queues under the prefix, and the held queues.

Consumers are found on the broker, not among the modules installed next to the
console: a queue `{prefix}.{name}` with a `.dead` beside it is a consumer's. The
management API lists the queues and gives unacked counts (its statistics are up to
5 s old); ready messages and attached consumers come from the queues themselves over
AMQP, so they are exact. Without the management API, the registry (`consumers.operations.registry`)
names the consumers, unacked counts are unknown, and the page says why.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime

import aiormq
import structlog
from aio_pika.abc import AbstractConnection

from consumers.console import letters
from consumers.console.activity import Rates
from consumers.console.management import Management, ManagementUnavailable, QueueInfo
from consumers.operations import registry
from consumers.topology import ConsumerQueues
from service.shared.bus import BusNames

log = structlog.get_logger("consumers.console")


@dataclass(frozen=True, slots=True)
class Depth:
    """A queue's counts; None where the source cannot tell."""

    name: str
    ready: int | None = None
    unacked: int | None = None
    consumers: int | None = None


@dataclass(frozen=True, slots=True)
class ConsumerRow:
    name: str
    main: Depth
    dead: Depth
    retries: tuple[Depth, ...] = ()  # shortest delay first
    rates: Rates | None = None  # the last five minutes; None when no worker reported
    oldest_dead: datetime | None = None  # the oldest dead letter's last failure

    @property
    def has_dead(self) -> bool:
        return bool(self.dead.ready)


@dataclass(slots=True)
class Overview:
    consumers: list[ConsumerRow] = field(default_factory=list)
    unrouted: Depth | None = None
    invalid: Depth | None = None
    problem: str | None = None  # why counts are partial

    def as_json(self) -> dict[str, object]:
        """The counts, by queue name, and each consumer's activity, for the page's refresh."""
        depths: list[Depth] = []
        for row in self.consumers:
            depths += [row.main, row.dead, *row.retries]
        depths += [d for d in (self.unrouted, self.invalid) if d is not None]
        return {
            "queues": {
                d.name: {"ready": d.ready, "unacked": d.unacked, "consumers": d.consumers}
                for d in depths
            },
            "activity": {
                row.name: {
                    "handled": None if row.rates is None else row.rates.handled,
                    "failed": None if row.rates is None else row.rates.failed,
                    "oldest_dead": None if row.oldest_dead is None else row.oldest_dead.isoformat(),
                }
                for row in self.consumers
            },
            "consumers": [row.name for row in self.consumers],
            "problem": self.problem,
        }


async def overview(
    management: Management,
    connection: AbstractConnection,
    names: BusNames,
    rates: dict[str, Rates] | None = None,
    ages: DeadAges | None = None,
) -> Overview:
    """Every consumer's queues, with `rates` (by consumer) and its oldest dead letter."""
    try:
        listed = await management.queues(names.prefix)
    except ManagementUnavailable as exc:
        result = await _from_amqp(connection, names)
        result.problem = f"{exc}. Counts below come over AMQP: no unacked counts."
    else:
        exact = await _declared(connection, [q.name for q in listed])
        merged = {}
        for q in listed:
            ready, consumers = exact.get(q.name, (q.ready, q.consumers))
            merged[q.name] = QueueInfo(q.name, ready, q.unacked, consumers)
        result = _from_listing(names, merged)
    rows = []
    for row in result.consumers:
        oldest = await ages.oldest(connection, row.dead) if ages is not None else None
        rows.append(replace(row, rates=(rates or {}).get(row.name), oldest_dead=oldest))
    result.consumers = rows
    return result


class DeadAges:
    """The oldest dead letter of each `.dead` queue, read again only when it may have changed.

    A quorum queue cannot be read in place, so finding the oldest letter is a sweep of
    the whole queue. Letters arrive newest last, so while a queue only grows its oldest
    stays; it is read again when the queue shrank (a replay, a discard), was empty, or
    after `FRESH` seconds. Queues over `LIMIT` letters are not swept for it.
    """

    FRESH = 60.0
    LIMIT = 10_000

    def __init__(self) -> None:
        self._known: dict[str, tuple[int, datetime | None, float]] = {}

    async def oldest(self, connection: AbstractConnection, dead: Depth) -> datetime | None:
        count = dead.ready or 0
        if count == 0 or count > self.LIMIT:
            self._known.pop(dead.name, None)
            return None
        now = time.monotonic()
        known = self._known.get(dead.name)
        if known is not None and known[0] <= count and now - known[2] < self.FRESH:
            return known[1]
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            try:
                found = await letters.oldest_failure(channel, dead.name)
            finally:
                if not channel.is_closed:
                    await channel.close()
        except (aiormq.exceptions.AMQPError, OSError, RuntimeError, TimeoutError) as exc:
            # A queue between leaders, say: the age is left out this time, not the page.
            log.info(
                "console: the oldest dead letter could not be read",
                queue=dead.name,
                error_type=type(exc).__name__,
            )
            return known[1] if known is not None else None
        self._known[dead.name] = (count, found, now)
        return found


_DELAY = re.compile(r"\.retry\.(\d+)(ms|s)$")


def delay_order(queue: str) -> tuple[float, str]:
    """Sorts retry queues by their delay: 5s, 30s, 120s, 600s, 1800s (not as text)."""
    found = _DELAY.search(queue)
    if found is None:
        return (float("inf"), queue)
    number = int(found.group(1))
    return (number / 1000 if found.group(2) == "ms" else float(number), queue)


def _depth(info: QueueInfo | None, name: str) -> Depth:
    if info is None:
        return Depth(name)
    return Depth(name, info.ready, info.unacked, info.consumers)


def _from_listing(names: BusNames, queues: dict[str, QueueInfo]) -> Overview:
    prefix = names.prefix + "."
    consumers = sorted(
        name[len(prefix) :]
        for name in queues
        if name.startswith(prefix) and "." not in name[len(prefix) :] and f"{name}.dead" in queues
    )
    rows = []
    for consumer in consumers:
        own = ConsumerQueues(names.prefix, consumer)
        retry = own.main + ".retry."
        retries = tuple(
            _depth(queues[name], name)
            for name in sorted(queues, key=delay_order)
            if name.startswith(retry)
        )
        rows.append(
            ConsumerRow(
                consumer,
                _depth(queues.get(own.main), own.main),
                _depth(queues.get(own.dead), own.dead),
                retries,
            )
        )
    return Overview(
        rows,
        _depth(queues.get(names.unrouted), names.unrouted),
        _depth(queues.get(names.invalid), names.invalid),
    )


async def _declared(
    connection: AbstractConnection, queues: list[str]
) -> dict[str, tuple[int, int]]:
    """Ready messages and attached consumers, as each queue says now."""
    found: dict[str, tuple[int, int]] = {}
    channel = await connection.channel()
    try:
        for name in queues:
            try:
                queue = await channel.declare_queue(name, passive=True)
            except Exception:
                # Deleted since it was listed: that closed the channel.
                channel = await connection.channel()
                continue
            result = queue.declaration_result
            found[name] = (result.message_count or 0, result.consumer_count or 0)
    finally:
        if not channel.is_closed:
            await channel.close()
    return found


async def _from_amqp(connection: AbstractConnection, names: BusNames) -> Overview:
    entries = await registry.read(connection, names)

    async def depth(name: str) -> Depth:
        # A passive declare of a missing queue closes its channel: one channel each.
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except Exception:
            return Depth(name)
        finally:
            if not channel.is_closed:
                await channel.close()
        result = queue.declaration_result
        return Depth(name, result.message_count or 0, None, result.consumer_count or 0)

    rows = []
    for consumer, entry in entries.items():
        own = ConsumerQueues(names.prefix, consumer)
        retries = tuple(
            [
                await depth(q)
                for q in sorted(entry.queues, key=delay_order)
                if q.startswith(own.main + ".retry.")
            ]
        )
        rows.append(ConsumerRow(consumer, await depth(own.main), await depth(own.dead), retries))
    return Overview(rows, await depth(names.unrouted), await depth(names.invalid))
