"""Confirmed publishing on an aiormq channel without aiormq's per-publish machinery.

aiormq's `basic_publish` takes a lock, builds frames through pamqp, queues each
publish for its writer task on its own, and wraps it all in context managers: at the
receiver's rate, more than the rest of a request. Here a publish is registered where
aiormq's reader looks for it (so confirms, nacks, returns and a closed channel reach
it as before), encoded directly (`service.publishing.frames`), and the publishes of one turn of
the event loop are handed to aiormq's writer together, as one write.

A publish's future is a plain one with a single done callback. aiormq's own futures
carry four (its two stores' bookkeeping and a retrieval of their exception), and each
runs as a turn of the event loop of its own when the broker answers; instead, the
channel's closing fails every answer still awaited, as aiormq's stores would.

This is the one module that reaches into aiormq's private interface: the channel's
`delivery_tag`, `confirmations` and `message_id_delivery_tag`, its `write_queue`,
`ChannelFrame`, and the `Returning` placeholder a returned publish leaves. aiormq is
pinned in constraints.txt, `check` runs when a channel is wrapped, and
`tests/service/publishing/test_confirm_channel.py` fails loudly if an upgrade changes
any of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiormq.abc import AbstractChannel, ChannelFrame
from aiormq.channel import Returning
from aiormq.exceptions import ChannelInvalidStateError

from service.publishing.frames import publish_frames
from service.shared.bus import Outgoing

_NEEDED = ("delivery_tag", "confirmations", "message_id_delivery_tag", "write_queue")


class Incompatible(RuntimeError):
    """aiormq no longer has what this module relies on: pin the version it was built for."""


def check(channel: AbstractChannel) -> None:
    """Raise `Incompatible` unless `channel` has the internals a fast publish uses."""
    missing = [name for name in _NEEDED if not hasattr(channel, name)]
    if missing or not hasattr(channel, "max_content_size"):
        raise Incompatible(f"aiormq channel lacks {', '.join(missing) or 'max_content_size'}")
    if not getattr(channel, "publisher_confirms", False):
        raise Incompatible("the channel was opened without publisher confirms")


class ConfirmChannel:
    """Publishes persistent, mandatory messages on one channel and hands back confirm futures.

    Use only this to publish on the channel: its delivery tags must follow the order
    in which publishes reach the wire.
    """

    def __init__(self, channel: AbstractChannel) -> None:
        check(channel)
        self._channel: Any = channel  # its private attributes have no types
        self._loop = asyncio.get_running_loop()
        self._buffer: list[bytes | bytearray] = []
        self._flush_scheduled = False
        self._putting: asyncio.Task[None] | None = None
        # An observer of aiormq's own: it ends when the channel or its connection closes.
        channel.closing.add_done_callback(self._closed)

    @property
    def is_closed(self) -> bool:
        return bool(self._channel.is_closed)

    def publish(
        self, message: Outgoing, then: Callable[[asyncio.Future[Any]], object] | None = None
    ) -> asyncio.Future[Any]:
        """Send `message`; the future is the broker's answer, as aiormq's reader sets it.

        It ends with `Basic.Ack`, or with aiormq's `DeliveryError` (a nack),
        `PublishError` (returned) or the channel's closing error. `then` is called with
        it once it has ended (as its one done callback, so on a later turn of the loop).
        """
        channel = self._channel
        if channel.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} closed")
        channel.delivery_tag += 1
        tag = channel.delivery_tag
        message_id = message.message_id
        confirmation: asyncio.Future[Any] = self._loop.create_future()
        channel.confirmations[tag] = confirmation
        ids = channel.message_id_delivery_tag
        ids[message_id] = tag

        def answered(answer: asyncio.Future[Any]) -> None:
            if ids.get(message_id) == tag:
                del ids[message_id]
            if then is not None:
                then(answer)
            elif not answer.cancelled():
                answer.exception()  # retrieved: asyncio logs a failure nobody read

        confirmation.add_done_callback(answered)
        self._buffer.append(
            publish_frames(
                channel.number,
                message.exchange,
                message.routing_key,
                message.body,
                message.properties,
                mandatory=True,
                max_content_size=channel.max_content_size,
            )
        )
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return confirmation

    def pending(self) -> list[asyncio.Future[Any]]:
        """The answers still awaited from the broker."""
        # A returned publish leaves a `Returning` in its place until its ack; it never ends.
        return [
            f
            for f in self._channel.confirmations.values()
            if not f.done() and not isinstance(f, Returning)
        ]

    def _closed(self, closing: asyncio.Future[Any]) -> None:
        """Fail every answer still awaited with the channel's closing error."""
        reason = None if closing.cancelled() else closing.exception()
        for answer in self.pending():
            if closing.cancelled():
                answer.cancel()
            else:
                answer.set_exception(reason or ChannelInvalidStateError("the channel closed"))

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._putting is not None or not self._buffer:
            return  # the writer queue is full; the waiting put takes this batch too
        frame = ChannelFrame(payload=b"".join(self._buffer), should_close=False)
        self._buffer.clear()
        try:
            self._channel.write_queue.put_nowait(frame)
        except asyncio.QueueFull:
            self._putting = self._loop.create_task(self._put(frame))

    async def _put(self, frame: ChannelFrame) -> None:
        """Wait for room in the writer's queue, keeping the order of later batches."""
        try:
            await self._channel.write_queue.put(frame)
            while self._buffer:
                later = ChannelFrame(payload=b"".join(self._buffer), should_close=False)
                self._buffer.clear()
                await self._channel.write_queue.put(later)
        finally:
            self._putting = None
