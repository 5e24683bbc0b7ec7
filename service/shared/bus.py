"""The bus contract: exchange and queue names, and the message built for each delivery."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from aiormq import spec
from pamqp.common import FieldTable

from service.shared.envelope import Envelope, body_digest
from service.shared.timing import iso_utc

PERSISTENT = 2
CONTENT_TYPE = "application/json"
# Set per request (and per span), so two copies of one delivery differ only in these.
PER_DELIVERY_HEADERS = frozenset(
    {"x-received-at", "x-delivery-id", "x-auth", "traceparent", "tracestate"}
)
_SHARED_PROPERTIES = tuple(
    name for name in spec.Basic.Properties().attributes() if name not in ("timestamp", "headers")
)


class AuthMethod(StrEnum):
    """How a delivery proved itself; published as header `x-auth`."""

    API_KEY = "api_key"
    SHARED_SECRET = "shared_secret"  # noqa: S105 - a method name, not a secret
    HMAC = "hmac"


@dataclass(frozen=True, slots=True)
class BusNames:
    """Every exchange and queue name under one prefix."""

    prefix: str

    @property
    def events(self) -> str:
        """The topic exchange every event is published to."""
        return f"{self.prefix}.events"

    @property
    def unrouted(self) -> str:
        """The alternate exchange, and its queue, for events no consumer is bound to."""
        return f"{self.prefix}.unrouted"

    @property
    def invalid(self) -> str:
        """The quarantine queue for authenticated deliveries that cannot be parsed."""
        return f"{self.prefix}.invalid"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message ready for the broker: where it goes, its body and its properties."""

    exchange: str
    routing_key: str
    body: bytes
    properties: spec.Basic.Properties

    @property
    def message_id(self) -> str:
        return str(self.properties.message_id)

    def same_as(self, other: Outgoing) -> bool:
        """Whether `other` is this message to the same place, but for its receipt.

        Two such messages may be stored as one: same exchange, routing key, body and
        properties, leaving out only the receipt time, delivery id, credential kind and
        trace context of each request.
        """
        if (self.exchange, self.routing_key, self.body) != (
            other.exchange,
            other.routing_key,
            other.body,
        ):
            return False
        mine, theirs = self.properties, other.properties
        if any(getattr(mine, name) != getattr(theirs, name) for name in _SHARED_PROPERTIES):
            return False
        return _content_headers(mine) == _content_headers(theirs)


def _content_headers(properties: spec.Basic.Properties) -> FieldTable:
    headers = properties.headers or {}
    return {k: v for k, v in headers.items() if k not in PER_DELIVERY_HEADERS}


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the receiver knows of a delivery besides its body."""

    delivery_id: str
    auth: AuthMethod
    received_at: datetime

    def headers(self) -> FieldTable:
        received = iso_utc(self.received_at)
        return {"x-received-at": received, "x-delivery-id": self.delivery_id, "x-auth": self.auth}


def event_message(names: BusNames, envelope: Envelope, body: bytes, receipt: Receipt) -> Outgoing:
    """The message for a parsed event, routed by its normalized name."""
    headers: FieldTable = {"x-event-name": envelope.event_name, **receipt.headers()}
    if envelope.tenant_id is not None:
        headers["x-tenant-id"] = envelope.tenant_id
    properties = spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        message_id=envelope.message_id,
        message_type=envelope.event_name,
        timestamp=receipt.received_at,
        headers=headers,
    )
    return Outgoing(names.events, envelope.routing_key, body, properties)


def invalid_message(names: BusNames, body: bytes, reason: str, receipt: Receipt) -> Outgoing:
    """The message that quarantines a delivery which cannot be routed."""
    properties = spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        message_id=body_digest(body),
        timestamp=receipt.received_at,
        headers={"x-invalid-reason": reason, **receipt.headers()},
    )
    # The default exchange routes by queue name, straight into the quarantine queue.
    return Outgoing("", names.invalid, body, properties)
