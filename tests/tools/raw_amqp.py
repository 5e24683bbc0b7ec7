"""A bare AMQP 0-9-1 publisher, for messages other clients send: aiormq gives each an id.

It speaks just enough of the protocol (with pamqp's frames) to log in, open a
channel, publish one message with confirms, and close.
"""

from __future__ import annotations

import asyncio

from pamqp import commands, frame, header
from pamqp.body import ContentBody
from pamqp.commands import Basic
from yarl import URL

Frame = object


async def _read(reader: asyncio.StreamReader, buffer: bytearray) -> tuple[int, Frame]:
    while True:
        try:
            consumed, channel, value = frame.unmarshal(bytes(buffer))
        except Exception:  # an incomplete frame: read more
            consumed = 0
        if consumed:
            del buffer[:consumed]
            return channel, value
        chunk = await reader.read(65536)
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        buffer.extend(chunk)


async def _expect(reader: asyncio.StreamReader, buffer: bytearray, kind: type) -> Frame:
    while True:
        _, value = await _read(reader, buffer)
        if isinstance(value, kind):
            return value
        if isinstance(value, commands.Connection.Close | commands.Channel.Close):
            raise ConnectionError(f"the broker refused: {value.reply_text}")


async def publish_raw(
    url: str, exchange: str, routing_key: str, body: bytes, properties: Basic.Properties
) -> None:
    """Publish one message exactly as given (no message id added) and wait for its confirm."""
    parsed = URL(url)
    reader, writer = await asyncio.open_connection(parsed.host, parsed.port or 5672)
    buffer = bytearray()
    try:
        writer.write(frame.marshal(header.ProtocolHeader(), 0))
        await _expect(reader, buffer, commands.Connection.Start)
        login = f"\0{parsed.user or 'guest'}\0{parsed.password or 'guest'}"
        writer.write(frame.marshal(commands.Connection.StartOk(response=login), 0))
        tune = await _expect(reader, buffer, commands.Connection.Tune)
        assert isinstance(tune, commands.Connection.Tune)
        writer.write(
            frame.marshal(
                commands.Connection.TuneOk(channel_max=1, frame_max=tune.frame_max, heartbeat=0), 0
            )
        )
        vhost = parsed.path.lstrip("/") or "/"
        writer.write(frame.marshal(commands.Connection.Open(virtual_host=vhost), 0))
        await _expect(reader, buffer, commands.Connection.OpenOk)
        writer.write(frame.marshal(commands.Channel.Open(), 1))
        await _expect(reader, buffer, commands.Channel.OpenOk)
        writer.write(frame.marshal(commands.Confirm.Select(), 1))
        await _expect(reader, buffer, commands.Confirm.SelectOk)
        writer.write(
            frame.marshal(Basic.Publish(exchange=exchange, routing_key=routing_key), 1)
            + frame.marshal(header.ContentHeader(0, len(body), properties), 1)
            + frame.marshal(ContentBody(body), 1)
        )
        await _expect(reader, buffer, Basic.Ack)
        writer.write(frame.marshal(commands.Connection.Close(200, "bye", 0, 0), 0))
        await _expect(reader, buffer, commands.Connection.CloseOk)
    finally:
        writer.close()
