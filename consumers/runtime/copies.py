"""Retry and dead copies: each confirmed by the broker before its message is acked.

Copies go out on the session's publishing connection (`consumers.runtime.session`), one publish
per message id at a time (`service.shared.confirms`). A copy the broker does not take hands
its message back to the queue, after a pause that grows with its redeliveries. During
an alarm that happens at once; after a nack, copies move to a new channel.
"""

from __future__ import annotations

import asyncio
import time

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pamqp.common import FieldTable

from consumers.event import copy_of
from consumers.runtime.failures import requeue_pause
from consumers.runtime.session import Session
from consumers.runtime.settling import bounded, log, quietly, settle
from service.shared.confirms import OnePerId
from service.shared.errors import BrokerBlocked

FORWARD_TIMEOUT = 10.0
# At most one new channel per this long after nacks.
RENEW_PAUSE = 1.0


class Copies:
    """Publishes the copies of one worker; `use` gives it each new session's channel."""

    def __init__(self) -> None:
        self._channel: AbstractChannel | None = None
        self._session: Session | None = None
        # Every copy goes out on one channel, where aiormq matches returns by message id.
        self._one_per_id = OnePerId()
        self._renewed_at = -RENEW_PAUSE
        self._background: set[asyncio.Task[None]] = set()

    def use(self, session: Session, channel: AbstractChannel) -> None:
        self._session, self._channel = session, channel

    async def forward(
        self, message: AbstractIncomingMessage, message_id: str, target: str, extra: FieldTable
    ) -> bool:
        """Publish a confirmed copy to `target`, then ack; on failure hand the message back.

        The copy carries `message_id`, the event's own, also when the message had none.
        """
        copy = copy_of(message, extra, message_id=message_id)
        if failed := await self._confirmed(copy, message_id, target):
            await asyncio.sleep(requeue_pause(message))
            await settle(message.nack(requeue=True))
            quietly(
                log.error,
                "broker did not take the copy; the message went back",
                target=target,
                error_type=failed,
            )
            return False
        await settle(message.ack())
        return True

    async def send_back(self, message: AbstractIncomingMessage, target: str) -> bool:
        """Publish a due retry copy to `target` and ack it; on failure leave it unsettled.

        The caller holds it and tries again: handed back, the copy would be dead-lettered
        by its queue's TTL, the path this one avoids (`consumers.runtime.returns`).
        """
        message_id = message.message_id or ""
        copy = copy_of(message, {}, message_id=message_id or None)
        if failed := await self._confirmed(copy, message_id, target):
            quietly(log.warning, "a due retry was not taken; it stays held", error_type=failed)
            return False
        await settle(message.ack())
        return True

    async def _confirmed(self, copy: aio_pika.Message, message_id: str, target: str) -> str:
        """Publish `copy` to queue `target`; "" once confirmed, else the error's name."""
        assert self._channel is not None
        assert self._session is not None
        try:
            if self._session.blocked is not None:
                # An alarm: the copy would only wait FORWARD_TIMEOUT.
                raise BrokerBlocked
            async with asyncio.timeout(FORWARD_TIMEOUT):
                mine = await self._one_per_id.acquire(message_id)
                try:
                    await self._channel.default_exchange.publish(
                        copy, routing_key=target, mandatory=True
                    )
                finally:
                    self._one_per_id.release(message_id, mine)
        except Exception as exc:
            # A nack, not a return (aiormq's PublishError is a DeliveryError too): returns
            # say the copy had no queue, not that the channel went bad.
            if isinstance(exc, aiormq.exceptions.DeliveryError) and not isinstance(
                exc, aiormq.exceptions.PublishError
            ):
                await self._renew()
            return type(exc).__name__
        return ""

    async def _renew(self) -> None:
        """After a nack, copies go out on a new channel, at most once per RENEW_PAUSE.

        A channel that published to a quorum queue while it had no leader may go on
        being refused after the election; a new one is not (`service.publishing.publisher`).
        """
        session, now = self._session, time.monotonic()
        if session is None or session.is_closed or now < self._renewed_at + RENEW_PAUSE:
            return
        self._renewed_at = now
        old = self._channel
        try:
            self._channel = await session.publishing.channel(
                publisher_confirms=True, on_return_raises=True
            )
        except Exception as exc:
            quietly(log.warning, "could not open a new channel", error_type=type(exc).__name__)
            return
        quietly(log.warning, "the broker refused a copy; copies go out on a new channel")
        if old is not None:
            # What is still on its way there is refused at the close, and goes back.
            closing = asyncio.create_task(bounded(old.close(), "close the old channel"))
            self._background.add(closing)
            closing.add_done_callback(self._background.discard)
