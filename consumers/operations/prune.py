"""Retiring a consumer: stop new events reaching its queue, move its backlog on, delete it.

`retire` unbinds a consumer's queue from the events exchange (the patterns its last
start recorded) and takes it out of the registry; its messages stay where they are.
With `into`, the waiting messages (its queue and its retry queues) are moved to
another consumer's queue, each acked only after its copy is confirmed, pass after
pass until a pass finds nothing. With `delete`, its queues are deleted, but only once
all of them are empty, measured again just before; a refused delete deletes nothing.
The registry keeps the consumer's queue names until they are deleted, so a later
`--delete` finds every one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aio_pika.abc import AbstractChannel, AbstractConnection

from consumers.consumer import DEFAULT_RETRY_DELAYS
from consumers.operations import registry
from consumers.operations.dead import move_messages
from consumers.topology import ConsumerQueues, unbind
from service.shared.bus import BusNames


class CannotRetire(Exception):
    """The consumer is still in use, or its queues are not empty; nothing was deleted."""


@dataclass(slots=True)
class Retired:
    """What retiring a consumer did."""

    name: str
    unbound: tuple[str, ...] = ()
    depths: dict[str, int] = field(default_factory=dict)
    moved: int = 0
    deleted: tuple[str, ...] = ()


async def occupancy(connection: AbstractConnection, queue: str) -> tuple[int | None, int]:
    """Messages ready in `queue` (None when there is no such queue) and its consumers.

    Each look gets its own channel: the broker closes a channel that asks for a
    queue it does not have.
    """
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except Exception:
        return None, 0
    finally:
        if not channel.is_closed:
            await channel.close()
    result = declared.declaration_result
    return result.message_count or 0, result.consumer_count or 0


async def depth(connection: AbstractConnection, queue: str) -> int | None:
    """Messages ready in `queue`, or None when there is no such queue."""
    return (await occupancy(connection, queue))[0]


async def retire(
    connection: AbstractConnection,
    names: BusNames,
    name: str,
    *,
    into: str | None = None,
    delete: bool = False,
) -> Retired:
    """Unbind consumer `name`; move its backlog `into` another; `delete` its emptied queues."""
    queues = ConsumerQueues(names.prefix, name)
    target = ConsumerQueues(names.prefix, into).main if into is not None else None
    entry = (await registry.read(connection, names)).get(name)
    waiting, attached = await occupancy(connection, queues.main)
    if waiting is None and entry is None:
        raise CannotRetire(f"there is no queue {queues.main}")
    if attached:
        raise CannotRetire(f"{attached} worker(s) still consume {queues.main}; stop them first")
    if target is not None and (target == queues.main or await depth(connection, target) is None):
        raise CannotRetire(f"there is no other consumer's queue {target} to move into")
    report = Retired(name)
    known = _queues_of(queues, entry)
    await _measure(connection, known, report)
    if delete and target is None:
        _refuse_unless_empty(report)  # before anything changes
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        if waiting is not None:
            # Recorded before anything is unbound: the registry never names an unbound pattern.
            await registry.append(connection, names, registry.unbound_record(name))
            bound = entry.patterns if entry is not None else ()
            report.unbound = await unbind(channel, queues.main, names.events, bound)
        if target is not None:
            report.moved = await _move_all(channel, queues, list(report.depths), target)
        if delete:
            await _delete(connection, channel, queues, known, report)
            await registry.append(connection, names, registry.gone_record(name))
        return report
    finally:
        if not channel.is_closed:
            await channel.close()


def _queues_of(queues: ConsumerQueues, entry: registry.Entry | None) -> list[str]:
    """Every queue the consumer may have: retry queues first, then the main and dead ones.

    Retry queues feed the main queue as their messages expire, so they are looked at,
    emptied and deleted before it.
    """
    known = set(entry.queues) if entry is not None else set()
    # Before the registry recorded them, retry queues followed the default delays.
    known |= {queues.retry(delay) for delay in DEFAULT_RETRY_DELAYS}
    retries = sorted(known - {queues.main, queues.dead, queues.bindings})
    return [*retries, queues.main, queues.dead]


async def _measure(connection: AbstractConnection, known: list[str], report: Retired) -> None:
    """The depth of each of the consumer's queues that exists, looked at in `known`'s order."""
    report.depths = {}
    for queue in known:
        found = await depth(connection, queue)
        if found is not None:
            report.depths[queue] = found


async def _move_all(
    channel: AbstractChannel, queues: ConsumerQueues, present: list[str], target: str
) -> int:
    """Move what waits (not the dead letters) to `target`, until a whole pass moves nothing.

    A message expiring from a retry queue into the main queue meanwhile is caught by
    the next pass.
    """
    waiting = [q for q in present if q not in (queues.dead, queues.bindings)]
    moved = 0
    while True:
        this_pass = 0
        for queue in waiting:
            this_pass += await move_messages(channel, queue, target)
        moved += this_pass
        if not this_pass:
            return moved


async def _delete(
    connection: AbstractConnection,
    channel: AbstractChannel,
    queues: ConsumerQueues,
    known: list[str],
    report: Retired,
) -> None:
    """Delete the consumer's queues, retry queues first, each only if empty.

    Measured afresh, retry queues before the main one they feed: if all are empty in
    that order, nothing is on its way. A delete that still finds messages (an operator
    sending some at that moment) is reported, never passed over.
    """
    await _measure(connection, known, report)
    _refuse_unless_empty(report)
    deleted = []
    for queue in report.depths:
        answer = await channel.queue_delete(queue)
        lost = getattr(answer, "message_count", 0) or 0
        if lost:
            raise CannotRetire(f"{lost} message(s) reached {queue} while it was being deleted")
        deleted.append(queue)
    # An earlier version's record of the bound patterns, if the registry did not take it.
    await channel.queue_delete(queues.bindings)
    report.deleted = tuple(deleted)


def _refuse_unless_empty(report: Retired) -> None:
    full = {queue: count for queue, count in report.depths.items() if count}
    if full:
        listed = ", ".join(f"{queue} ({count})" for queue, count in sorted(full.items()))
        raise CannotRetire(f"not deleted: messages wait in {listed}")
