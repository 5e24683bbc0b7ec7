"""The `Event` a handler receives: the envelope's fields plus what the bus knows of the message."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage
from pamqp.common import FieldTable

from service.shared.envelope import Envelope, body_digest

if TYPE_CHECKING:
    from consumers.dedupe import Claim, Connection

ATTEMPT = "x-attempt"
ROUTING_KEY = "x-routing-key"
# A failed copy's traceback (`consumers.runtime.failures.traceback_text`).
TRACEBACK = "x-error-traceback"
# How many times a dead letter was replayed (`consumers.operations.dead.fresh_copy`).
REPLAYS = "x-replays"
# Headers the broker adds on dead-lettering; a copy's own x- headers tell the story instead.
BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")


@dataclass(frozen=True, slots=True)
class Event:
    """One Avionté event, as a handler sees it."""

    name: str
    routing_key: str
    tenant_id: int | None
    message_id: str
    correlation_id: str | None
    resource: dict[str, Any] | None
    payload: dict[str, Any] = field(repr=False)
    body: bytes = field(repr=False)
    received_at: datetime
    attempt: int
    redelivered: bool
    claim: Claim | None = field(default=None, repr=False, compare=False)
    # Every header of the message as delivered (the receiver's `x-` headers, a trace's
    # `traceparent`, a copy's attempt headers).
    headers: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A PostgreSQL transaction that also records this message as handled, atomically.

        Only for a consumer with dedupe on: what the handler writes in it commits
        exactly when the record does, so a redelivery finds it done and runs nothing.
        """
        if self.claim is None:
            raise RuntimeError(
                "event.transaction() needs a consumer with dedupe on and DEDUPE_DATABASE_URL set"
            )
        return self.claim.store.transaction(self.claim)


class Delivered(Protocol):
    """What an event is read from: a message as delivered (aio-pika's), or the test kit's.

    `consumers.testing.deliver` builds one as the receiver would publish it, so that the
    worker and the kit read events in one way.
    """

    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, Any] | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def routing_key(self) -> str | None: ...
    @property
    def timestamp(self) -> datetime | None: ...
    @property
    def redelivered(self) -> bool | None: ...


def parse_resource(value: object) -> dict[str, Any] | None:
    """The `Resource` field as a dict: Avionté sends it as a string holding JSON."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        return None
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def attempt_of(message: Delivered) -> int:
    """Which attempt this delivery is, counting from 1."""
    value = (message.headers or {}).get(ATTEMPT)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def routing_key_of(message: Delivered) -> str:
    """The event's own routing key, also for a message that came back through a retry queue."""
    value = (message.headers or {}).get(ROUTING_KEY)
    return value if isinstance(value, str) and value else message.routing_key or ""


def copy_of(
    message: AbstractIncomingMessage,
    extra: FieldTable,
    drop: tuple[str, ...] = BROKER_HEADERS,
    *,
    message_id: str | None = None,
) -> aio_pika.Message:
    """A persistent copy of `message` for a retry, dead or replay queue.

    It keeps the headers not starting with one of `drop`, and adds `extra`. Its id is
    `message_id`, else the message's own, else the sha256 of the body: never one the
    client library would make up.
    """
    headers: FieldTable = {
        key: value for key, value in (message.headers or {}).items() if not key.startswith(drop)
    }
    headers.update(extra)
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id or message.message_id or body_digest(message.body),
        type=message.type,
        timestamp=message.timestamp,
        correlation_id=message.correlation_id,
    )


def _received_at(message: Delivered) -> datetime:
    value = (message.headers or {}).get("x-received-at")
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    return message.timestamp or datetime.now(UTC)


def event_from(
    message: Delivered,
    envelope: Envelope,
    routing_key: str,
    attempt: int,
    claim: Claim | None = None,
) -> Event:
    """Build the `Event` for a delivered message whose body parsed as `envelope`.

    `routing_key` and `attempt` are the message's own, from `routing_key_of` and `attempt_of`.
    """
    return Event(
        name=envelope.event_name,
        routing_key=routing_key,
        tenant_id=envelope.tenant_id,
        message_id=message.message_id or envelope.message_id,
        correlation_id=envelope.correlation_id,
        resource=parse_resource(envelope.payload.get("Resource")),
        payload=envelope.payload,
        body=message.body,
        received_at=_received_at(message),
        attempt=attempt,
        redelivered=bool(message.redelivered),
        claim=claim,
        headers=dict(message.headers or {}),
    )
