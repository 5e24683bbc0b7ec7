"""Confirmed publishing to RabbitMQ, behind one small seam.

The receiver keeps its own connection loop rather than aio-pika's robust
connection: it must know at every moment whether a confirm is possible, to
answer `/readyz` and to fail fast with 503, while a robust channel makes a
publish wait for the reconnection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aio_pika
import aiormq
import structlog
from aiormq import spec
from aiormq.abc import AbstractChannel
from yarl import URL

from service.publishing.confirm_channel import ConfirmChannel
from service.shared import blocking, brokers
from service.shared.brokers import Nodes
from service.shared.bus import BusNames, Outgoing
from service.shared.errors import (
    BrokerBlocked,
    BrokerUnavailable,
    PublishFailed,
    PublishNacked,
    PublishReturned,
    PublishTimeout,
)
from service.shared.supervise import keep_running, stop
from service.shared.timing import backoff
from service.shared.topology import declare_receiver_topology

log = structlog.get_logger("service.publisher")

# A stalled link is noticed after about two heartbeats, unless AMQP_URL sets its own.
DEFAULT_HEARTBEAT = 10
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
# At most one new channel per this long after nacks (`AmqpPublisher._hold`).
RENEW_PAUSE = 1.0
# A session that lasted this long was healthy: losing it starts the back-off over.
HEALTHY_SESSION = 5.0

BrokerState = Literal["connected", "blocked", "disconnected"]


class Publisher(Protocol):
    """What the HTTP handler needs from the bus."""

    @property
    def ready(self) -> bool:
        """True while a publish can be confirmed."""

    @property
    def state(self) -> BrokerState:
        """`connected`, `blocked` (by an alarm: publishes fail at once) or `disconnected`."""

    async def start(self) -> None:
        """Begin connecting; returns without waiting for the broker."""

    async def close(self) -> None:
        """Stop and release the connection."""

    async def publish(self, message: Outgoing) -> None:
        """Return once the broker confirmed the message; raise `PublishFailed` otherwise."""


@dataclass(slots=True)
class _Flight:
    """One publish on its way to the broker, which identical deliveries may join."""

    message: Outgoing | None  # let go once it has landed
    confirmation: asyncio.Future[Any]
    deadline: float
    timer: asyncio.TimerHandle | None = None
    expired: bool = False
    # Each caller waits on a future of its own: one that stops waiting (its client
    # went) cancels only that one, never the publish the others share.
    waiters: list[asyncio.Future[Any]] = field(default_factory=list)
    settled: bool = False

    def expire(self) -> None:
        """PUBLISH_TIMEOUT passed without an answer: every waiter gets `PublishTimeout`."""
        self.expired = True
        self.confirmation.cancel()

    def wait(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        """A future that ends as the broker's answer does, once the flight is settled."""
        waiter = loop.create_future()
        if self.settled:
            _answer(self.confirmation, waiter)
        else:
            self.waiters.append(waiter)
        return waiter

    def settle(self) -> None:
        """The answer is in: hand it to every waiter still waiting."""
        if self.settled:
            return
        self.settled = True
        for waiter in self.waiters:
            if not waiter.done():
                _answer(self.confirmation, waiter)
        self.waiters.clear()


def _answer(answer: asyncio.Future[Any], waiter: asyncio.Future[Any]) -> None:
    if answer.cancelled():
        waiter.cancel()
    elif (failure := answer.exception()) is not None:
        waiter.set_exception(failure)
    else:
        waiter.set_result(answer.result())


class AmqpPublisher:
    """Publishes persistent, mandatory messages with confirms over one supervised connection."""

    def __init__(
        self,
        url: str,
        names: BusNames,
        *,
        timeout: float,
        on_crash: Callable[[str], object] = lambda task: None,
    ) -> None:
        """`url` is one broker URL or several nodes' separated by commas."""
        self._nodes = Nodes([_with_heartbeat(each) for each in brokers.split(url)])
        self._names = names
        self._timeout = timeout
        self._channel: AbstractChannel | None = None
        self._fast: ConfirmChannel | None = None
        # Why the broker blocked the connection (an alarm), while it does.
        self._blocked: str | None = None
        # Set by a nack: publishing moves to a new channel (see `_hold`).
        self._renew = asyncio.Event()
        self._retiring: set[asyncio.Task[None]] = set()
        # Publishes awaiting the broker, by message id: one at a time per id (aiormq
        # matches a return to its publish by id), and identical deliveries share one.
        self._flights: dict[str, _Flight] = {}
        # The same flights in the order of their deadlines, which one timer watches (see
        # `_expire`): a timer per publish cost more than the rest of its bookkeeping.
        self._expiring: deque[_Flight] = deque()
        self._expiry: asyncio.TimerHandle | None = None
        # The latest deadline ever queued there. Not the queue's last one: the queue may
        # empty while the timer stays set for a deadline that has left it, and a flight
        # due before that one needs a timer of its own.
        self._latest = 0.0
        self._supervisor: asyncio.Task[None] | None = None
        self._on_crash = on_crash
        # Kept from `start`: on Python 3.11 every asyncio.get_running_loop() is a getpid call.
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"AmqpPublisher(prefix={self._names.prefix!r}, ready={self.ready})"

    @property
    def ready(self) -> bool:
        return self.state == "connected"

    @property
    def state(self) -> BrokerState:
        channel = self._channel
        if channel is None or channel.is_closed:
            return "disconnected"
        return "blocked" if self._blocked is not None else "connected"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._supervisor = keep_running("amqp-publisher", self._supervise, on_crash=self._on_crash)

    async def close(self) -> None:
        await stop(self._supervisor)
        self._supervisor = None
        self._channel = None

    async def publish(self, message: Outgoing) -> None:
        loop = self._loop or asyncio.get_running_loop()
        # One deadline for the whole call, however many earlier flights of its id it waits for.
        deadline = loop.time() + self._timeout
        self._usable()
        message_id = message.message_id
        while (earlier := self._flights.get(message_id)) is not None:
            if earlier.message is not None and earlier.message.same_as(message):
                # The same delivery is on its way already (Avionté retries at once):
                # it is stored exactly when that one is, as one message.
                await self._outcome(earlier)
                return
            if earlier.confirmation.done():
                # Answered, but its done callback runs only on the loop's next turn, and
                # awaiting a done future does not yield: settle it here, or this loop
                # would spin forever with the whole receiver frozen.
                self._landed(message_id, earlier)
                continue
            # Same id, other message: aiormq tells returns apart by id, so wait for it.
            try:
                async with asyncio.timeout_at(deadline):
                    with contextlib.suppress(PublishFailed):
                        await self._outcome(earlier)
            except TimeoutError:
                raise PublishTimeout from None
        # Looked up only now: a nack may have moved publishing to a new channel meanwhile.
        fast = self._usable()
        try:
            # Its one done callback lands the flight, which is made right after.
            confirmation = fast.publish(message, lambda _: self._landed(message_id, flight))
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError):
            raise BrokerUnavailable from None
        flight = _Flight(message, confirmation, deadline)
        if deadline < self._latest:
            # It waited behind an earlier flight of its id, so its deadline comes before
            # the newest flights': a timer of its own.
            flight.timer = loop.call_at(deadline, flight.expire)
        else:
            self._latest = deadline
            self._expiring.append(flight)
            if self._expiry is None:
                self._expiry = loop.call_at(deadline, self._expire, deadline)
        self._flights[message_id] = flight
        await self._outcome(flight)

    def _expire(self, due: float) -> None:
        """Expire the flights due by `due` that have no answer; watch the next one.

        Flights join `_expiring` in the order of their deadlines (each is its arrival
        plus PUBLISH_TIMEOUT). Landed ones leave from the front as they land (`_landed`),
        or here when one behind an unanswered flight landed first.
        """
        self._expiry = None
        expiring = self._expiring
        while expiring:
            first = expiring[0]
            if not first.settled:
                if first.deadline > due:
                    loop = self._loop or asyncio.get_running_loop()
                    self._expiry = loop.call_at(first.deadline, self._expire, first.deadline)
                    return
                first.expire()
            expiring.popleft()

    def _usable(self) -> ConfirmChannel:
        """The channel to publish on now, or the reason there is none."""
        fast = self._fast
        if fast is None or fast.is_closed:
            raise BrokerUnavailable
        if self._blocked is not None:
            # It would wait the whole PUBLISH_TIMEOUT: fail now, for the spool or a 503.
            raise BrokerBlocked
        return fast

    def _landed(self, message_id: str, flight: _Flight) -> None:
        flight.settle()  # first: nothing below may keep the waiters from their answer
        flight.message = None
        if flight.timer is not None:
            flight.timer.cancel()
        expiring = self._expiring
        while expiring and expiring[0].settled:
            expiring.popleft()
        if self._flights.get(message_id) is flight:
            del self._flights[message_id]
        answer = flight.confirmation
        if answer.cancelled():
            return
        failure = answer.exception()
        # A nack; a return (PublishError, a DeliveryError too) only says no queue took it.
        nacked = isinstance(failure, aiormq.exceptions.DeliveryError) and not isinstance(
            failure, aiormq.exceptions.PublishError
        )
        if nacked or (failure is None and isinstance(answer.result(), spec.Basic.Nack)):
            self._renew.set()

    async def _outcome(self, flight: _Flight) -> None:
        """Wait for the broker's answer to `flight`; raise `PublishFailed` unless it is an ack."""
        try:
            confirm = await flight.wait(self._loop or asyncio.get_running_loop())
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this caller is being cancelled (client gone, shutdown)
            if flight.expired:
                raise PublishTimeout from None
            # aiormq ends the confirms of a connection it closes (a missed heartbeat, a
            # close of ours) with CancelledError: the publish failed, the caller did not.
            raise BrokerUnavailable from None
        except aiormq.exceptions.PublishError:
            raise PublishReturned from None
        except aiormq.exceptions.DeliveryError:
            raise PublishNacked from None
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError):
            # RuntimeError covers aiormq's ChannelInvalidStateError on a closing channel.
            raise BrokerUnavailable from None
        if not isinstance(confirm, spec.Basic.Ack):
            raise PublishNacked

    async def _supervise(self) -> None:
        """Connect to a node, declare, and hold the channel until it closes; then go on."""
        failures = 0
        nodes = self._nodes
        while True:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    connection = await aio_pika.connect(nodes.current, timeout=CONNECT_TIMEOUT)
            except Exception as exc:
                # aiormq can turn a cancel during its handshake into a connection error: a
                # supervisor being stopped must stop, not connect again (a hung shutdown).
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise asyncio.CancelledError from exc
                # Any failure to connect, of whatever type, means: try the next node.
                if failures == 0:
                    log.warning("broker unreachable", broker=nodes.shown, error=type(exc).__name__)
                if nodes.advance():
                    # A whole round failed: pause before the next, longer each time.
                    await asyncio.sleep(backoff(RECONNECT_DELAYS, failures))
                    failures += 1
                continue
            began = time.monotonic()
            failure: Exception | None = None
            try:
                await self._hold(connection)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = exc
            finally:
                self._channel = self._fast = None
                self._blocked = None
                # Closing a connection whose link just died can hang; never let it stop
                # the loop from connecting again.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(connection.close()), CLOSE_TIMEOUT)
            nodes.advance()
            if failure is None and time.monotonic() - began >= HEALTHY_SESSION:
                # A node lost after a good session is the least likely to answer now:
                # go to the next at once; with one node only, pause first.
                failures = 0
                if len(nodes.urls) == 1:
                    await asyncio.sleep(RECONNECT_DELAYS[0])
                continue
            # A session that failed (a declare refused, a permission missing) or ended at
            # once would fail the same way on every node: back off whatever their number.
            pause = backoff(RECONNECT_DELAYS, failures)
            failures += 1
            if failure is not None:
                log.error(
                    "broker session failed; connecting again after a pause",
                    error=type(failure).__name__,
                    detail=str(failure),
                    retry_in_s=pause,
                )
            await asyncio.sleep(pause)

    async def _hold(self, connection: aio_pika.abc.AbstractConnection) -> None:
        """Publish on a channel of `connection` until the connection closes.

        A channel whose publishes a quorum queue refused while it had no leader (its
        node just went away) may go on refusing after a new leader is elected, while a
        new channel is accepted. So a nack moves publishing to a fresh channel, at most
        once per RENEW_PAUSE; the old channel closes once its answers are in.
        """
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_receiver_topology(channel, self._names)
        underlay = await self._use(channel)
        blocking.watch(underlay.connection, self._on_blocking)
        log.info("broker connected", broker=self._nodes.shown, prefix=self._names.prefix)
        self._renew.clear()
        while True:
            renew = asyncio.ensure_future(self._renew.wait())
            try:
                await asyncio.wait([underlay.closing, renew], return_when=asyncio.FIRST_COMPLETED)
            finally:
                renew.cancel()
            if underlay.closing.done():
                break
            await asyncio.sleep(RENEW_PAUSE)
            self._renew.clear()
            fresh = await connection.channel(publisher_confirms=True, on_return_raises=True)
            old, old_fast = channel, self._fast
            underlay, channel = await self._use(fresh), fresh
            log.warning("the broker refused a publish; publishing on a new channel")
            if old_fast is not None:
                self._retiring.add(asyncio.create_task(self._retire(old, old_fast)))
        log.warning("broker connection lost", broker=self._nodes.shown)

    async def _use(self, channel: aio_pika.abc.AbstractChannel) -> AbstractChannel:
        underlay = await channel.get_underlay_channel()
        self._fast = ConfirmChannel(underlay)
        self._channel = underlay
        return underlay

    async def _retire(self, channel: aio_pika.abc.AbstractChannel, fast: ConfirmChannel) -> None:
        """Close `channel` once the broker has answered what was published on it."""
        try:
            pending = fast.pending()
            if pending:
                # Closing rejects what is left: those callers spool or answer 503.
                await asyncio.wait(pending, timeout=self._timeout + 1)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), CLOSE_TIMEOUT)
            task = asyncio.current_task()
            if task is not None:
                self._retiring.discard(task)

    def _on_blocking(self, reason: str | None) -> None:
        if reason is not None:
            self._blocked = reason
            log.warning(
                "broker blocked publishing; deliveries go to the spool or get 503 until it lifts",
                broker=self._nodes.shown,
                reason=reason,
            )
        elif self._blocked is not None:
            self._blocked = None
            log.info("broker unblocked", broker=self._nodes.shown)


def _with_heartbeat(url: str) -> str:
    parsed = URL(url)
    if "heartbeat" not in parsed.query:
        parsed = parsed.update_query(heartbeat=DEFAULT_HEARTBEAT)
    return str(parsed)
