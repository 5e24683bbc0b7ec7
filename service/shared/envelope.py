"""Avionté envelopes: parse the front- and back-office shapes and derive routing keys.

Both the receiver and the consumer runtime use this module, so an event is named
and routed the same way on either side of the bus.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from service.shared.errors import InvalidEnvelope

# AMQP short strings (routing keys, message ids) hold at most 255 bytes.
MAX_SHORT_STRING = 255
# x-tenant-id travels as a signed 64-bit AMQP integer.
_INT64 = range(-(2**63), 2**63)

_DIGITS = re.compile(r"[0-9]{1,19}")
_SEPARATORS = re.compile(r"[_\-. ]+")
_DROPPED = re.compile(r"[^A-Za-z0-9 ]+")
# A word is an acronym that stops before a capitalised word, a capitalised or
# lower-case word, or an acronym; digits stay with the word they follow.
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z0-9]+|[A-Z]+[0-9]*")


@dataclass(frozen=True, slots=True)
class Envelope:
    """The fields of a delivery that routing and consumers need."""

    event_name: str
    routing_key: str
    tenant_id: int | None
    message_id: str
    correlation_id: str | None
    payload: dict[str, Any]


@lru_cache(maxsize=1024)
def routing_key(event_name: str) -> str:
    """Normalize an event name: split CamelCase, lowercase, and join the words with dots.

    `_`, `-`, `.` and spaces separate words; accents are stripped and any other
    character is dropped. Returns an empty string when no word is left.
    """
    if not event_name.isascii():
        event_name = unicodedata.normalize("NFKD", event_name)
    words: list[str] = []
    for chunk in _SEPARATORS.split(event_name):
        words.extend(_WORD.findall(_DROPPED.sub("", chunk)))
    return ".".join(word.lower() for word in words)


def body_digest(body: bytes) -> str:
    """The message id of last resort: the sha256 hex of the body."""
    return hashlib.sha256(body).hexdigest()


def _identifier(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str):
        value = value.strip()
        if value and len(value.encode("utf-8", "surrogatepass")) <= MAX_SHORT_STRING:
            return value
    return None


def _tenant(payload: dict[str, Any]) -> int | None:
    for field in ("FrontOfficeTenantId", "TenantId"):
        value = payload.get(field)
        if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value in _INT64:
            return value
    return None


def parse(body: bytes) -> Envelope:
    """Parse a delivery body, or raise `InvalidEnvelope` with a short reason code."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidEnvelope("not_json") from None
    if not isinstance(payload, dict):
        raise InvalidEnvelope("not_an_object")
    name = payload.get("EventName")
    if not isinstance(name, str) or not name.strip():
        raise InvalidEnvelope("no_event_name")
    key = routing_key(name)
    if not key:
        raise InvalidEnvelope("unusable_event_name")
    if len(key) > MAX_SHORT_STRING or len(name.encode("utf-8", "surrogatepass")) > MAX_SHORT_STRING:
        raise InvalidEnvelope("event_name_too_long")
    correlation_id = _identifier(payload.get("CorrelationId"))
    message_id = _identifier(payload.get("DeduplicationId")) or correlation_id or body_digest(body)
    return Envelope(
        event_name=name,
        routing_key=key,
        tenant_id=_tenant(payload),
        message_id=message_id,
        correlation_id=correlation_id,
        payload=payload,
    )
