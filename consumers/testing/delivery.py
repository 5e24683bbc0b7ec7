"""`deliver`: one event to a consumer in-process, and the fate a worker would give it.

The event becomes the message the receiver would publish (`service.shared.bus`), the
worker's `Event` is read from it (`consumers.event`), and `consumers.runtime.fate`
decides, as it does for the worker. Only what the broker does is taken from the
consumer instead: a routing key none of its patterns matches never reaches its queue.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from consumers.consumer import Consumer
from consumers.event import ATTEMPT, ROUTING_KEY, attempt_of, event_from, routing_key_of
from consumers.runtime.fate import Outcome as Fated
from consumers.runtime.fate import decide
from consumers.testing.memory import MemoryDedupe
from service.shared.bus import AuthMethod, BusNames, Receipt, event_message
from service.shared.envelope import Envelope, parse
from service.shared.errors import InvalidEnvelope
from service.shared.samples import encoded

Status = Literal["ok", "retry", "dead", "filtered", "duplicate", "unbound"]
# The worker's outcome (its metric's label) as the kit reports it.
STATUS: dict[Fated, Status] = {
    "ok": "ok",
    "filtered": "filtered",
    "duplicate": "duplicate",
    "retried": "retry",
    "dead": "dead",
    "rejected": "dead",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a worker would do with the message.

    `status`: `ok` (acked after every handler returned), `retry` (after `delay` seconds),
    `dead` (`Reject`, or the last attempt failed), `filtered` (no handler takes its
    tenant), `duplicate` (its message id was handled already) or `unbound` (none of
    the consumer's patterns match: its queue never gets it). `error` is what a handler
    raised (the `Reject` for a rejection), else None.
    """

    status: Status
    error: BaseException | None = None
    delay: float | None = None


@dataclass(frozen=True, slots=True)
class _Message:
    """A message as a worker receives it, with what `consumers.event.Delivered` asks."""

    body: bytes
    headers: Mapping[str, Any]
    message_id: str | None
    routing_key: str | None
    timestamp: datetime | None
    redelivered: bool | None = False


@dataclass(slots=True)
class _Loop:
    """What deliveries in one event loop share: with pytest-asyncio, one test's worth."""

    loop: asyncio.AbstractEventLoop
    dedupe: MemoryDedupe = field(default_factory=MemoryDedupe)
    started: set[Consumer] = field(default_factory=set)


_current: _Loop | None = None


def _this_loop() -> _Loop:
    global _current  # one slot, replaced when another loop (the next test) asks
    loop = asyncio.get_running_loop()
    if _current is None or _current.loop is not loop:
        _current = _Loop(loop)
    return _current


def _published(body: bytes, attempt: int) -> tuple[_Message, Envelope]:
    """The message the receiver publishes for `body`, as attempt `attempt` arrives."""
    try:
        envelope = parse(body)
    except InvalidEnvelope as invalid:
        raise ValueError(
            f"not an event the receiver publishes: it quarantines it ({invalid.reason})"
        ) from None
    receipt = Receipt(str(uuid.uuid4()), AuthMethod.API_KEY, datetime.now(UTC))
    published = event_message(BusNames("testing"), envelope, body, receipt)
    properties = published.properties
    headers = dict(properties.headers or {})
    if attempt > 1:  # as the retry copy that brings it back carries them
        headers.update({ATTEMPT: attempt, ROUTING_KEY: published.routing_key})
    message = _Message(
        body, headers, properties.message_id, published.routing_key, properties.timestamp
    )
    return message, envelope


async def deliver(
    consumer: Consumer,
    event: Mapping[str, Any] | bytes,
    *,
    attempt: int = 1,
    dedupe: MemoryDedupe | None = None,
) -> Outcome:
    """Run `consumer`'s handlers that match `event` in-process, as a worker would.

    `event` is a dict (`sample`'s) or the raw body. `attempt` counts from 1; the one
    after the last of the consumer's `retry_delays` is its last. A consumer with
    `dedupe` on keeps its records in `dedupe`, by default a `MemoryDedupe` shared by
    every delivery in this event loop (one test, with pytest-asyncio's default). The
    consumer's `on_start` hooks run before its first delivery in the loop, as a worker
    awaits them before it consumes. Raises `ValueError` for a body the receiver would
    quarantine instead of publishing.
    """
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt!r}")
    if isinstance(event, bytes | bytearray):
        body = bytes(event)
    elif isinstance(event, Mapping):
        body = encoded(dict(event))
    else:
        raise TypeError(f"event must be a dict or the body's bytes, got {type(event).__name__}")
    message, envelope = _published(body, attempt)
    routing_key = routing_key_of(message)
    if not consumer.routes_for(routing_key):
        return Outcome("unbound")
    shared = _this_loop()
    if consumer not in shared.started:
        for hook in consumer.starting:
            await hook()
        shared.started.add(consumer)
    once = (dedupe or shared.dedupe) if consumer.dedupe else None
    read = event_from(message, envelope, routing_key, attempt_of(message))
    fate = await decide(consumer, read, once=once)
    return Outcome(STATUS[fate.outcome], fate.failure, fate.delay)
