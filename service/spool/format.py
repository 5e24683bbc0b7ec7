"""The spool's record format: framed, checksummed messages, and a scanner that skips damage.

A record is `MAGIC | payload length | crc32(payload) | payload`; the payload is
`metadata length | metadata (JSON) | body`. The metadata holds the exchange,
routing key and AMQP properties, so a drained message is exactly the message the
broker would have had.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiormq import spec

from service.shared.bus import PERSISTENT, Outgoing

MAGIC = b"AVS1"
HEADER = struct.Struct(">4sII")
_META_LENGTH = struct.Struct(">I")
# Far above any accepted body; a larger length can only be damage.
MAX_PAYLOAD = 256 * 1024 * 1024


def encode(message: Outgoing) -> bytes:
    """One record holding `message`."""
    props = message.properties
    meta = orjson.dumps(
        {
            "exchange": message.exchange,
            "routing_key": message.routing_key,
            "content_type": props.content_type,
            "message_id": props.message_id,
            "type": props.message_type,
            "timestamp": int(props.timestamp.timestamp()) if props.timestamp else None,
            "headers": props.headers or {},
        }
    )
    payload = _META_LENGTH.pack(len(meta)) + meta + message.body
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> Outgoing:
    """The message in a record's payload; raises ValueError if it does not hold one."""
    (meta_length,) = _META_LENGTH.unpack_from(payload)
    meta = orjson.loads(payload[_META_LENGTH.size : _META_LENGTH.size + meta_length])
    body = payload[_META_LENGTH.size + meta_length :]
    stamp = meta["timestamp"]
    properties = spec.Basic.Properties(
        content_type=meta["content_type"],
        delivery_mode=PERSISTENT,
        message_id=meta["message_id"],
        message_type=meta["type"],
        timestamp=datetime.fromtimestamp(stamp, UTC) if stamp is not None else None,
        headers=meta["headers"],
    )
    return Outgoing(meta["exchange"], meta["routing_key"], body, properties)


@dataclass(frozen=True, slots=True)
class Record:
    """A whole, intact record at `[start, end)` of the scanned bytes."""

    start: int
    end: int
    message: Outgoing


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes at `[start, end)` that hold no intact record: torn, flipped or garbage."""

    start: int
    end: int


def _record_at(data: bytes, offset: int) -> Record | None:
    if len(data) - offset < HEADER.size:
        return None
    magic, length, crc = HEADER.unpack_from(data, offset)
    end = offset + HEADER.size + length
    if magic != MAGIC or length > MAX_PAYLOAD or end > len(data):
        return None
    payload = data[offset + HEADER.size : end]
    if zlib.crc32(payload) != crc:
        return None
    try:
        return Record(offset, end, decode(payload))
    except (ValueError, KeyError, TypeError, struct.error):
        return None


def scan(data: bytes, offset: int = 0) -> Iterator[Record | Damage]:
    """Every record from `offset` on; damaged stretches come out as `Damage` and are skipped."""
    while offset < len(data):
        record = _record_at(data, offset)
        if record is not None:
            yield record
            offset = record.end
            continue
        # Resynchronise on the next magic that starts an intact record.
        resume = data.find(MAGIC, offset + 1)
        while resume != -1 and _record_at(data, resume) is None:
            resume = data.find(MAGIC, resume + 1)
        end = len(data) if resume == -1 else resume
        yield Damage(offset, end)
        offset = end
