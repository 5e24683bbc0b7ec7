"""Dead letters: look at them without consuming, and replay them to their consumer's queue."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from pamqp.common import FieldTable

from consumers.event import ATTEMPT, BROKER_HEADERS, REPLAYS, ROUTING_KEY, TRACEBACK, copy_of
from consumers.operations.transfer import peek, transfer
from consumers.topology import ConsumerQueues

# Headers that belong to one run through the retries; a replay starts afresh. (A copy
# keeps `x-replays`, the count of replays, which each replay raises by one.)
ATTEMPT_HEADERS = (
    ATTEMPT,
    "x-attempts",
    "x-error-type",
    "x-error-message",
    TRACEBACK,
    "x-first-failure-at",
    "x-last-failure-at",
    *BROKER_HEADERS,
)
# What varies from one letter to the next within one error: ids, then any digit run.
IDS = re.compile(
    r"\b[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\b"  # a uuid
    r"|\b0x[0-9a-f]+\b"
    # A hex id: letters and digits both, sparing words ("deadbeef") and plain numbers.
    r"|\b(?=[0-9]*[a-f])(?=[a-f]*[0-9])[0-9a-f]{8,}\b",
    re.IGNORECASE,
)
NUMBERS = re.compile(r"[0-9]+")
SHOWN = 120  # characters of an error shown


@dataclass(slots=True)
class ErrorGroup:
    """Letters whose errors differ only in ids and numbers.

    `example` is one of their messages as it was, when folding changed it; else empty.
    """

    error: str
    example: str
    count: int = 0


@dataclass(frozen=True, slots=True)
class DeadReport:
    """What `.dead` holds: how many, the oldest failure, and the errors grouped."""

    queue: str
    count: int
    sampled: int
    oldest: str | None
    errors: list[ErrorGroup] = field(default_factory=list)


def _death_field(message: AbstractIncomingMessage, name: str) -> object:
    """A field of the newest `x-death` entry, which the broker adds when it dead-letters."""
    deaths = (message.headers or {}).get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0].get(name)
    return None


def folded(text: str) -> str:
    """`text` with its ids and numbers replaced by `<id>` and `<n>`."""
    return NUMBERS.sub("<n>", IDS.sub("<id>", text))


def _error_parts(message: AbstractIncomingMessage) -> tuple[str, str]:
    """A letter's error type (or what the broker says) and its message, maybe empty."""
    headers = message.headers or {}
    kind = headers.get("x-error-type")
    if not isinstance(kind, str):
        reason = _death_field(message, "reason")
        return (f"(broker: {reason})" if isinstance(reason, str) else "(unknown)"), ""
    text = headers.get("x-error-message")
    return kind, text if isinstance(text, str) else ""


def error_of(message: AbstractIncomingMessage, *, fold: bool = False) -> str:
    """A letter's error type and message; with `fold`, its message `folded`."""
    kind, text = _error_parts(message)
    shown = (folded(text) if fold else text)[:SHOWN]
    return f"{kind}: {shown}" if shown else kind


def original_routing_key(message: AbstractIncomingMessage) -> str:
    headers = message.headers or {}
    key = headers.get(ROUTING_KEY)
    if isinstance(key, str) and key:
        return key
    # Dead-lettered by the broker (delivery limit): the original key is in x-death.
    keys = _death_field(message, "routing-keys")
    if isinstance(keys, list) and keys and isinstance(keys[0], str):
        return keys[0]
    return message.routing_key or ""


def replays_of(message: AbstractIncomingMessage) -> int:
    """How many times this letter was replayed before (`x-replays`), 0 if never."""
    count = (message.headers or {}).get(REPLAYS)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0


def fresh_copy(message: AbstractIncomingMessage, *, replay: bool = True) -> aio_pika.Message:
    """A copy of a held message for its consumer's queue: same event, attempts started over.

    A `replay` counts itself in `x-replays`; a message only moved keeps the count it had.
    """
    extra: FieldTable = {ROUTING_KEY: original_routing_key(message)}
    if replay:
        extra[REPLAYS] = replays_of(message) + 1
    return copy_of(message, extra, ATTEMPT_HEADERS)


async def inspect_dead(
    connection: AbstractConnection, queues: ConsumerQueues, sample: int
) -> DeadReport:
    """Read up to `sample` dead letters and put each back as a copy (see `consumers.peek`)."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        queue = await channel.declare_queue(queues.dead, passive=True)
        count = queue.declaration_result.message_count or 0
        errors: dict[str, ErrorGroup] = {}
        failures: list[str] = []

        def see(message: AbstractIncomingMessage) -> None:
            error = error_of(message, fold=True)
            text = _error_parts(message)[1]
            example = text[:SHOWN] if folded(text) != text else ""
            errors.setdefault(error, ErrorGroup(error, example)).count += 1
            failed_at = (message.headers or {}).get("x-last-failure-at")
            if isinstance(failed_at, str):
                failures.append(failed_at)

        sampled = await peek(channel, queues.dead, sample, see)
        oldest = min(failures, default=None)
        grouped = sorted(errors.values(), key=lambda group: -group.count)
        return DeadReport(queues.dead, count, sampled, oldest, grouped)
    finally:
        await channel.close()


async def replay_dead(channel: AbstractChannel, queues: ConsumerQueues, limit: int | None) -> int:
    """Move up to `limit` dead letters back to the consumer's queue with fresh attempt counts.

    Each is acked on `.dead` only after the broker confirmed its copy.
    """
    return await move_messages(channel, queues.dead, queues.main, limit, replay=True)


async def move_messages(
    channel: AbstractChannel,
    source: str,
    target: str,
    limit: int | None = None,
    *,
    replay: bool = False,
) -> int:
    """Move up to `limit` messages from queue `source` to queue `target`, afresh.

    Each copy keeps the event's routing key and id and starts its attempts over; a
    `replay` also counts itself (`fresh_copy`). The original is acked only after the
    broker confirmed the copy. Only what `source` holds now is moved: one that fails at
    once and comes back does not keep this going.
    """

    async def move(message: AbstractIncomingMessage) -> None:
        await channel.default_exchange.publish(
            fresh_copy(message, replay=replay), routing_key=target, mandatory=True
        )

    return await transfer(channel, source, limit, move)
