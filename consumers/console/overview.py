"""What the overview shows: every consumer's queues under the prefix, and the held queues.

Consumers are found on the broker, not among the modules installed next to the
console: a queue `{prefix}.{name}` with a `.dead` beside it is a consumer's. The
management API lists the queues and gives unacked counts (its statistics are up to
5 s old); ready messages and attached consumers come from the queues themselves over
AMQP, so they are exact. Without the management API, the registry (`consumers.operations.registry`)
names the consumers, unacked counts are unknown, and the page says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aio_pika.abc import AbstractConnection

from consumers.console.management import Management, ManagementUnavailable, QueueInfo
from consumers.operations import registry
from consumers.topology import ConsumerQueues
from service.shared.bus import BusNames


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
    retries: tuple[Depth, ...] = ()


@dataclass(slots=True)
class Overview:
    consumers: list[ConsumerRow] = field(default_factory=list)
    unrouted: Depth | None = None
    invalid: Depth | None = None
    problem: str | None = None  # why counts are partial

    def as_json(self) -> dict[str, object]:
        """The counts, by queue name, for the page's refresh."""
        depths: list[Depth] = []
        for row in self.consumers:
            depths += [row.main, row.dead, *row.retries]
        depths += [d for d in (self.unrouted, self.invalid) if d is not None]
        return {
            "queues": {
                d.name: {"ready": d.ready, "unacked": d.unacked, "consumers": d.consumers}
                for d in depths
            },
            "consumers": [row.name for row in self.consumers],
            "problem": self.problem,
        }


async def overview(
    management: Management, connection: AbstractConnection, names: BusNames
) -> Overview:
    try:
        listed = await management.queues(names.prefix)
    except ManagementUnavailable as exc:
        result = await _from_amqp(connection, names)
        result.problem = f"{exc}. Counts below come over AMQP: no unacked counts."
        return result
    exact = await _declared(connection, [q.name for q in listed])
    merged = {}
    for q in listed:
        ready, consumers = exact.get(q.name, (q.ready, q.consumers))
        merged[q.name] = QueueInfo(q.name, ready, q.unacked, consumers)
    return _from_listing(names, merged)


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
            _depth(queues[name], name) for name in sorted(queues) if name.startswith(retry)
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
            [await depth(q) for q in sorted(entry.queues) if q.startswith(own.main + ".retry.")]
        )
        rows.append(ConsumerRow(consumer, await depth(own.main), await depth(own.dead), retries))
    return Overview(rows, await depth(names.unrouted), await depth(names.invalid))
