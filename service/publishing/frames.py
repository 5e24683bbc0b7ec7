"""The AMQP frames of one publish, encoded directly: byte for byte what pamqp would write.

pamqp is pure Python and walks every property through a generic encoder: at the
receiver's rate that is a large share of a request's cost. A relay message uses few
properties (content type, headers, delivery mode, message id, timestamp, type) and
header values that are text or integers, so those are encoded here with plain
struct packing. Anything else (another property, another header value type, a string
too long for its field) is handed to pamqp itself, so the output is always pamqp's.
`tests/test_frames.py` compares the two over many generated messages.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from pamqp import commands, encode, frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

FRAME_END = b"\xce"
_FRAME = struct.Struct(">BHI")
_METHOD = struct.Struct(">HHH")  # class 60, method 40, reserved ticket
_HEADER = struct.Struct(">HHQH")  # class 60, weight 0, body size, property flags
_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_INTEGERS = (
    (-128, 127, b"b", struct.Struct(">b")),
    (-32768, 32767, b"s", struct.Struct(">h")),
    (0, 65535, b"u", struct.Struct(">H")),
    (-2147483648, 2147483647, b"I", struct.Struct(">i")),
    (0, 4294967295, b"i", struct.Struct(">I")),
    (-9223372036854775808, 9223372036854775807, b"l", struct.Struct(">q")),
)
_OTHER_PROPERTIES = (
    "content_encoding",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "user_id",
    "app_id",
    "cluster_id",
)


class _Unsupported(Exception):
    """A value this encoder leaves to pamqp."""


def _short(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise _Unsupported
    return _U8.pack(len(raw)) + raw


def _value(value: object) -> bytes:
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return b"S" + _U32.pack(len(raw)) + raw
    if isinstance(value, int) and not isinstance(value, bool):
        for low, high, code, packer in _INTEGERS:
            if low <= value <= high:
                return code + packer.pack(value)
    raise _Unsupported


def _table(headers: dict[str, object]) -> bytes:
    if not headers:
        return _U32.pack(0)
    parts = []
    for key, value in sorted(headers.items()):
        raw = key.encode("utf-8")
        if len(raw) > 128:  # pamqp truncates these, and warns
            raise _Unsupported
        parts.append(_U8.pack(len(raw)) + raw + _value(value))
    data = b"".join(parts)
    return _U32.pack(len(data)) + data


def _timestamp(moment: datetime) -> bytes:
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        moment = moment.replace(tzinfo=UTC)
    return _U64.pack(int(moment.timestamp()))


def _properties(props: commands.Basic.Properties) -> tuple[int, bytes]:
    """The property flags and values, for the properties a relay message uses."""
    for name in _OTHER_PROPERTIES:
        value = getattr(props, name)
        if value is not None and value != "":
            raise _Unsupported
    flags = 0
    parts = []
    if props.content_type:
        flags |= 0x8000
        parts.append(_short(props.content_type))
    if props.headers is not None:
        flags |= 0x2000
        parts.append(_table(props.headers))  # type: ignore[arg-type]
    if props.delivery_mode is not None:
        flags |= 0x1000
        if not isinstance(props.delivery_mode, int) or not 0 <= props.delivery_mode <= 255:
            raise _Unsupported
        parts.append(_U8.pack(props.delivery_mode))
    if props.message_id:
        flags |= 0x0080
        parts.append(_short(props.message_id))
    if props.timestamp is not None:
        flags |= 0x0040
        if not isinstance(props.timestamp, datetime):
            raise _Unsupported
        parts.append(_timestamp(props.timestamp))
    if props.message_type:
        flags |= 0x0020
        parts.append(_short(props.message_type))
    return flags, b"".join(parts)


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME.pack(kind, channel, len(payload)) + payload + FRAME_END


def publish_frames(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: commands.Basic.Properties,
    *,
    mandatory: bool,
    max_content_size: int,
) -> bytes:
    """Basic.Publish, its content header and body frames, as one run of bytes."""
    try:
        if encode.DEPRECATED_RABBITMQ_SUPPORT:  # pamqp then encodes integers another way
            raise _Unsupported
        method = (
            _METHOD.pack(60, 40, 0)
            + _short(exchange)
            + _short(routing_key)
            + (b"\x01" if mandatory else b"\x00")
        )
        flags, values = _properties(properties)
    except _Unsupported:
        return pamqp_frames(
            channel,
            exchange,
            routing_key,
            body,
            properties,
            mandatory=mandatory,
            max_content_size=max_content_size,
        )
    header = _HEADER.pack(60, 0, len(body), flags) + values
    parts = [_frame(1, channel, method), _frame(2, channel, header)]
    if len(body) < max_content_size:
        if body:
            parts.append(_frame(3, channel, body))
    else:
        for start in range(0, len(body), max_content_size):
            parts.append(_frame(3, channel, body[start : start + max_content_size]))
    return b"".join(parts)


def pamqp_frames(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: commands.Basic.Properties,
    *,
    mandatory: bool,
    max_content_size: int,
) -> bytes:
    """The same frames, as pamqp (and aiormq's `basic_publish`) would write them."""
    values: list[commands.Basic.Publish | ContentHeader | ContentBody] = [
        commands.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory),
        ContentHeader(body_size=len(body), properties=properties),
    ]
    if body:
        if len(body) < max_content_size:
            values.append(ContentBody(body))
        else:
            values.extend(
                ContentBody(body[start : start + max_content_size])
                for start in range(0, len(body), max_content_size)
            )
    return b"".join(frame.marshal(value, channel) for value in values)
