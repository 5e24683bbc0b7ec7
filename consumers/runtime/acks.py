"""A consumer channel's acks: a run of handled messages goes out as one `multiple` ack.

Handlers that finish in the same turn of the event loop have their acks gathered, and
the longest run of delivery tags that is wholly settled goes out as one Basic.Ack with
`multiple` set: one frame, one write, instead of one per message. The rest go out one
by one, as before.

`multiple` acks every unsettled tag up to its own on the channel, so a run is used only
when every tag in it is known: the channel carries this consumer's deliveries alone,
its tags count up by one from 1, and each tag in the run is either one this window
is about to ack or one already settled on the wire (`settled`, after its nack or its
forward). A tag the window has not seen (still on its way to a handler, or cancelled)
ends the run, so nothing in flight is ever acked with it.
"""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractIncomingMessage

# How long an ack waits for others to go with it; a prefetch slot is held that long more.
GATHER_SECONDS = 0.002
# Settled tags kept above one that is not (a handler that runs for hours). Beyond this
# many, the window stops gathering for the rest of the channel's life: memory stays
# bounded, and single acks are always right.
MOST_TRACKED = 4096


class Acks:
    """The acks of one consumer channel's deliveries; made anew with each channel."""

    def __init__(self) -> None:
        self._floor = 0  # every tag up to this one is settled; -1 once it stopped tracking
        self._settled: set[int] = set()  # settled tags above the floor
        self._ready: dict[int, tuple[AbstractIncomingMessage, asyncio.Future[None]]] = {}
        self._flushing: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def ack(self, message: AbstractIncomingMessage) -> asyncio.Future[None]:
        """Ack `message` with the others handled meanwhile; done once its frame is written."""
        if self._loop is None:
            # Asked once: each `get_running_loop` is a getpid system call on Python 3.11.
            self._loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = self._loop.create_future()
        tag = message.delivery_tag
        if tag is None:
            done.set_result(None)
            return done
        self._ready[tag] = (message, done)
        if self._flushing is None:
            self._flushing = self._loop.create_task(self._flush())
        return done

    def settled(self, message: AbstractIncomingMessage) -> None:
        """`message`'s handling ended; if it was acked or nacked, its frame is queued.

        Idempotent, and a no-op for a message not settled (cancelled, or in a run).
        """
        if message.processed and message.delivery_tag is not None:
            self._done(message.delivery_tag)

    def _done(self, tag: int) -> None:
        if tag <= self._floor or self._floor < 0:
            return  # known already, or no longer tracked
        self._settled.add(tag)
        while self._floor + 1 in self._settled:
            self._floor += 1
            self._settled.discard(self._floor)
        if len(self._settled) > MOST_TRACKED:
            self._floor = -1  # never 0 or more again: no run can start
            self._settled.clear()

    async def _flush(self) -> None:
        # Deliveries reach their handlers a turn or more apart: wait a moment for company.
        await asyncio.sleep(GATHER_SECONDS)
        self._flushing = None
        ready, self._ready = self._ready, {}
        top = self._floor
        while top >= 0 and (top + 1 in ready or top + 1 in self._settled):
            top += 1
        run = sorted(tag for tag in ready if tag <= top)
        sends = [self._send(ready, [tag]) for tag in ready if tag > top]
        if run:
            sends.append(self._send(ready, run, multiple=len(run) > 1))
        await asyncio.gather(*sends)

    async def _send(
        self,
        ready: dict[int, tuple[AbstractIncomingMessage, asyncio.Future[None]]],
        tags: list[int],
        *,
        multiple: bool = False,
    ) -> None:
        """Ack the last of `tags` (all of them, with `multiple`), then tell their waiters."""
        failure: Exception | None = None
        try:
            await ready[tags[-1]][0].ack(multiple=multiple)
        except Exception as error:
            # The channel is gone: the broker hands these messages out again.
            failure = error
        else:
            for tag in tags:
                self._done(tag)
        for tag in tags:
            waiter = ready[tag][1]
            if waiter.done():  # its handler was cancelled meanwhile
                continue
            if failure is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(failure)
