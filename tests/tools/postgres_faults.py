"""PostgreSQL as a client meets it while it restarts, spoken on a proxy's links."""

from __future__ import annotations

import asyncio
import struct

_SSL_REQUEST = 80877103


def _error(code: str, message: str) -> bytes:
    fields = b"".join(
        kind + value.encode() + b"\0"
        for kind, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


async def starting_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Refuse the session as a server in recovery does: FATAL 57P03, then close."""
    length, code = struct.unpack("!II", await reader.readexactly(8))
    if code == _SSL_REQUEST:
        writer.write(b"N")  # no TLS here; the client sends its startup message next
        await writer.drain()
        length, code = struct.unpack("!II", await reader.readexactly(8))
    await reader.readexactly(length - 8)
    writer.write(_error("57P03", "the database system is starting up"))
    await writer.drain()
