"""The way back from a retry queue: each worker brings its due retries back itself.

A retry copy waits in `{queue}.retry.{delay}`, whose TTL dead-letters it back to the
main queue at least once. But when the main queue's leader fails while a copy moves,
RabbitMQ (3.10 here; rabbitmq-server issue #12625) can leave the copy in the retry
queue, neither ready nor unacked, until that queue's own leader moves: a retry stuck
for good. So a worker also consumes its retry queues whose delay it can wait out
(HOLD_LIMIT, well inside RabbitMQ's 30-minute consumer timeout): it holds each copy
until its delay has passed, publishes it to the main queue, and acks it only once the
broker confirms; a refused publish is tried again while the copy stays held. TTL
dead-lettering is left for what no worker holds (more than PREFETCH at once, longer
delays, no worker running).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from consumers.topology import ConsumerQueues
from service.shared.timing import backoff

HOLD_LIMIT = 900.0
PREFETCH = 200
# Pauses between attempts to publish a due copy that the broker did not take.
AGAIN = (1.0, 2.0, 5.0)

Forward = Callable[[AbstractIncomingMessage, str], Awaitable[bool]]


def due_at(message: AbstractIncomingMessage, delay: float) -> float:
    """When the copy's delay is over (epoch seconds): its last failure plus the delay."""
    failed = (message.headers or {}).get("x-last-failure-at")
    try:
        start = datetime.fromisoformat(str(failed)).timestamp()
    except ValueError:
        return 0.0  # no time to go by: due now
    return start + delay


class Returns:
    """Holds one consumer's due-soon retries and sends them back; closed with the session."""

    def __init__(self, queues: ConsumerQueues, forward: Forward) -> None:
        self._queues = queues
        self._forward = forward
        self._channel: AbstractChannel | None = None
        self._consuming: list[tuple[AbstractQueue, str]] = []
        self._held: set[asyncio.Task[None]] = set()

    async def start(
        self,
        connection: AbstractConnection,
        delays: tuple[float, ...],
        opened: list[AbstractChannel],
    ) -> None:
        """Consume the retry queues this worker can wait out; `opened` gets the channel."""
        held = sorted({d for d in delays if d <= HOLD_LIMIT})
        if not held:
            return
        self._channel = await connection.channel()
        opened.append(self._channel)
        await self._channel.set_qos(prefetch_count=PREFETCH)
        for delay in held:
            queue = await self._channel.declare_queue(self._queues.retry(delay), passive=True)

            async def on_copy(message: AbstractIncomingMessage, delay: float = delay) -> None:
                task = asyncio.current_task()
                assert task is not None
                self._held.add(task)
                try:
                    await self._bring_back(message, delay)
                finally:
                    self._held.discard(task)

            self._consuming.append((queue, await queue.consume(on_copy)))

    async def _bring_back(self, message: AbstractIncomingMessage, delay: float) -> None:
        wait = due_at(message, delay) - datetime.now(UTC).timestamp()
        await asyncio.sleep(min(max(wait, 0.0), delay))
        failures = 0
        while not self._gone() and not await self._forward(message, self._queues.main):
            # Still held: nothing goes back to the retry queue to be dead-lettered.
            await asyncio.sleep(backoff(AGAIN, failures))
            failures += 1

    def _gone(self) -> bool:
        """The channel closed: the broker has taken back what this held."""
        return self._channel is None or self._channel.is_closed

    async def close(self) -> None:
        """Stop taking copies; what is held goes back to its retry queue with the channel."""
        for queue, tag in self._consuming:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(queue.cancel(tag), 5)
        for task in list(self._held):
            task.cancel()
        if self._held:
            await asyncio.wait(set(self._held), timeout=5)
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._channel.close(), 5)
