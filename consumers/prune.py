"""Retiring a consumer: stop new events reaching its queue, move its backlog on, delete it.

`retire` unbinds a consumer's queue from the events exchange (the patterns its last
start recorded) and takes it out of the registry; its messages stay where they are.
With `into`, the waiting messages (its queue and its retry queues) are moved to
another consumer's queue, each acked only after its copy is confirmed. With
`delete`, its queues are deleted, but only once all of them are empty; a refused
delete changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aio_pika.abc import AbstractChannel, AbstractConnection

from consumers.consumer import DEFAULT_RETRY_DELAYS
from consumers.dead import move_messages
from consumers.registry import rewrite
from consumers.topology import ConsumerQueues, sync_bindings
from service.bus import BusNames


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


async def depth(connection: AbstractConnection, queue: str) -> int | None:
    """Messages in `queue`, or None when there is no such queue.

    Each look gets its own channel: the broker closes a channel that asks for a
    queue it does not have.
    """
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except Exception:
        return None
    finally:
        if not channel.is_closed:
            await channel.close()
    return declared.declaration_result.message_count or 0


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
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        try:
            main = await channel.declare_queue(queues.main, passive=True)
        except Exception:
            raise CannotRetire(f"there is no queue {queues.main}") from None
        attached = main.declaration_result.consumer_count or 0
        if attached:
            raise CannotRetire(f"{attached} worker(s) still consume {queues.main}; stop them first")
        if target is not None and (
            target == queues.main or await depth(connection, target) is None
        ):
            raise CannotRetire(f"there is no other consumer's queue {target} to move into")
        report = Retired(name)
        await _measure(connection, channel, names, queues, report)
        if delete and target is None:
            _refuse_unless_empty(report)  # before anything changes
        await rewrite(channel, names, remove=[name])
        report.unbound = await sync_bindings(channel, main, names.events, queues.bindings, ())
        if target is not None:
            for queue in [q for q in report.depths if q != queues.dead]:
                report.moved += await move_messages(channel, queue, target)
                report.depths[queue] = await depth(connection, queue) or 0
        if delete:
            _refuse_unless_empty(report)
            gone = (*report.depths, queues.bindings)
            for queue in gone:
                await channel.queue_delete(queue)
            report.deleted = gone
        return report
    finally:
        if not channel.is_closed:
            await channel.close()


async def _measure(
    connection: AbstractConnection,
    channel: AbstractChannel,
    names: BusNames,
    queues: ConsumerQueues,
    report: Retired,
) -> None:
    """The depth of each of the consumer's queues that exists."""
    known = set((await rewrite(channel, names)).get(queues.consumer, ()))
    # Before the registry, a consumer's retry queues followed the default delays.
    candidates = known | {queues.main, queues.dead}
    candidates |= {queues.retry(delay) for delay in DEFAULT_RETRY_DELAYS}
    for queue in sorted(candidates - {queues.bindings}):
        found = await depth(connection, queue)
        if found is not None:
            report.depths[queue] = found


def _refuse_unless_empty(report: Retired) -> None:
    full = {queue: count for queue, count in report.depths.items() if count}
    if full:
        listed = ", ".join(f"{queue} ({count})" for queue, count in sorted(full.items()))
        raise CannotRetire(f"not deleted: messages wait in {listed}")
