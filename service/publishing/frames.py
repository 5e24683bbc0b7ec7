"""The AMQP frames of one publish, encoded directly: byte for byte what pamqp would write.

pamqp is pure Python and walks every property through a generic encoder: at the
receiver's rate that is a large share of a request's cost. A relay message uses few
properties (content type, headers, delivery mode, message id, timestamp, type) and
header values that are text or integers, so those are encoded here with plain
struct packing, into one buffer. Anything else (another property, another header
value type, a string too long for its field) is handed to pamqp itself, so the output
is always pamqp's. `tests/service/publishing/test_frames.py` compares the two over
many generated messages.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from pamqp import commands, encode, frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

FRAME_END = b"\xce"
_FRAME = struct.Struct(">BHI")
# A method frame's start: type 1, channel, size; class 60, method 40, reserved ticket.
_METHOD = struct.Struct(">BHIHHH")
# A content header frame's start: type 2, channel, size; class 60, weight 0, body size,
# property flags. The sizes and the flags are filled in once the values are written.
_HEADER = struct.Struct(">BHIHHQH")
_FLAGS_AT = 19
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
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
# Header names as encoded (length and text). A relay message has a handful, the same
# in every message; the bound keeps other names from filling it.
_KEYS: dict[str, bytes] = {}
_KEYS_KEPT = 64


class _Unsupported(Exception):
    """A value this encoder leaves to pamqp."""


def _short(out: bytearray, text: str) -> None:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise _Unsupported
    out += _U8.pack(len(raw))
    out += raw


def _key(key: str) -> bytes:
    raw = key.encode("utf-8")
    if len(raw) > 128:  # pamqp truncates these, and warns
        raise _Unsupported
    encoded = _U8.pack(len(raw)) + raw
    if len(_KEYS) < _KEYS_KEPT:
        _KEYS[key] = encoded
    return encoded


def _table(out: bytearray, headers: dict[str, object]) -> None:
    start = len(out)
    out += b"\0\0\0\0"  # its size, once known
    for key in sorted(headers):
        value = headers[key]
        out += _KEYS.get(key) or _key(key)
        if isinstance(value, str):
            raw = value.encode("utf-8")
            out += b"S"
            out += _U32.pack(len(raw))
            out += raw
        elif isinstance(value, int) and not isinstance(value, bool):
            for low, high, code, packer in _INTEGERS:
                if low <= value <= high:
                    out += code
                    out += packer.pack(value)
                    break
            else:
                raise _Unsupported
        else:
            raise _Unsupported
    _U32.pack_into(out, start, len(out) - start - 4)


def _timestamp(moment: datetime) -> bytes:
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        moment = moment.replace(tzinfo=UTC)
    return _U64.pack(int(moment.timestamp()))


def _properties(out: bytearray, props: commands.Basic.Properties) -> int:
    """Write the values of the properties a relay message uses; return their flags."""
    for name in _OTHER_PROPERTIES:
        value = getattr(props, name)
        if value is not None and value != "":
            raise _Unsupported
    flags = 0
    if props.content_type:
        flags |= 0x8000
        _short(out, props.content_type)
    if props.headers is not None:
        flags |= 0x2000
        _table(out, props.headers)  # type: ignore[arg-type]
    if props.delivery_mode is not None:
        flags |= 0x1000
        if not isinstance(props.delivery_mode, int) or not 0 <= props.delivery_mode <= 255:
            raise _Unsupported
        out += _U8.pack(props.delivery_mode)
    if props.message_id:
        flags |= 0x0080
        _short(out, props.message_id)
    if props.timestamp is not None:
        flags |= 0x0040
        if not isinstance(props.timestamp, datetime):
            raise _Unsupported
        out += _timestamp(props.timestamp)
    if props.message_type:
        flags |= 0x0020
        _short(out, props.message_type)
    return flags


def publish_frames(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: commands.Basic.Properties,
    *,
    mandatory: bool,
    max_content_size: int,
) -> bytes | bytearray:
    """Basic.Publish, its content header and body frames, as one run of bytes.

    Written into one buffer as they go: each frame's size is filled in at its end.
    """
    try:
        if encode.DEPRECATED_RABBITMQ_SUPPORT:  # pamqp then encodes integers another way
            raise _Unsupported
        out = bytearray(_METHOD.pack(1, channel, 0, 60, 40, 0))
        _short(out, exchange)
        _short(out, routing_key)
        out += b"\x01" if mandatory else b"\x00"
        _U32.pack_into(out, 3, len(out) - 7)
        out += FRAME_END
        header = len(out)
        out += _HEADER.pack(2, channel, 0, 60, 0, len(body), 0)
        flags = _properties(out, properties)
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
    _U32.pack_into(out, header + 3, len(out) - header - 7)
    _U16.pack_into(out, header + _FLAGS_AT, flags)
    out += FRAME_END
    if len(body) < max_content_size:
        if body:
            _body(out, channel, body)
    else:
        for start in range(0, len(body), max_content_size):
            _body(out, channel, body[start : start + max_content_size])
    return out


def _body(out: bytearray, channel: int, chunk: bytes) -> None:
    out += _FRAME.pack(3, channel, len(chunk))
    out += chunk
    out += FRAME_END


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
