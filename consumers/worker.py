"""The worker: runs consumers in one process and decides every message's fate in one place.

A message is acked only after its handlers return. A handler that raises sends a
copy to the retry queue for its attempt, which dead-letters it back after the
delay; after the last attempt, or on `Reject`, the copy goes to `.dead`. The copy
is confirmed by the broker before the original is acked, so no path loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pamqp.common import FieldTable

from consumers.consumer import Consumer, check_unique
from consumers.errors import Reject
from consumers.event import (
    ATTEMPT,
    ROUTING_KEY,
    attempt_of,
    copy_of,
    event_from,
    routing_key_of,
)
from consumers.metrics import WorkerMetrics, serve_metrics
from consumers.registry import entry_for, rewrite
from consumers.settings import WorkerSettings
from consumers.topology import ConsumerQueues, declare_consumer_topology
from service.bus import BusNames
from service.confirms import OnePerId
from service.envelope import body_digest, parse
from service.errors import InvalidEnvelope
from service.logs import bound_logger
from service.text import safe_text
from service.timing import backoff, iso_utc

log = structlog.get_logger("consumers.worker")

FORWARD_TIMEOUT = 10.0
# Pause before handing a message back when the broker would not take its copy, doubling
# with each redelivery up to a minute, so a lasting broker fault never becomes a hot loop.
REQUEUE_PAUSE = 2.0
MAX_REQUEUE_PAUSE = 60.0
# Shutdown steps that talk to the broker get this long; without a link they cannot finish.
SHUTDOWN_STEP_TIMEOUT = 5.0
CONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)
# How soon a lost connection is made again (aio-pika's default is 5 s).
RECONNECT_SECONDS = 1.0
MAX_ERROR_MESSAGE = 1000
# Refusals at start that no retry can change: the worker stops and says why.
PERMANENT = (
    aiormq.exceptions.ChannelPreconditionFailed,
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ConnectionNotAllowed,
)


class NoHandler(Exception):
    """No handler of the consumer matches the message's routing key any more."""


@dataclass(slots=True)
class _Running:
    consumer: Consumer
    queues: ConsumerQueues
    channel: AbstractChannel
    queue: AbstractQueue
    tag: str = ""
    handling: int = 0


def _now() -> str:
    return iso_utc(datetime.now(UTC))


class Worker:
    """Runs `consumers` until `stop` is set, then drains in-flight handlers and exits."""

    def __init__(
        self,
        consumers: Sequence[Consumer],
        settings: WorkerSettings,
        *,
        concurrency: int | None = None,
    ) -> None:
        check_unique(consumers)
        self._consumers = tuple(consumers)
        self._settings = settings
        self._names = BusNames(settings.bus_prefix)
        self._concurrency = concurrency
        self._in_flight: set[asyncio.Task[None]] = set()
        self._publisher: AbstractChannel | None = None
        # Every copy goes out on one channel, where aiormq matches returns by message id.
        self._one_per_id = OnePerId()
        self.metrics = WorkerMetrics()
        self._log = bound_logger("consumers.worker")
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; raises `SettingsError` if a set METRICS_PORT is taken."""
        metrics = await serve_metrics(self.metrics, self._settings.metrics_port)
        try:
            await self._run(stop, metrics.url if metrics else None)
        finally:
            if metrics is not None:
                await metrics.runner.cleanup()

    async def _run(self, stop: asyncio.Event, metrics_url: str | None) -> None:
        connection = await self._connect(stop)
        if connection is None:
            return
        try:
            running = await self._start_all(connection, stop)
            if running is None:
                return
            log.info(
                "worker started", consumers=[r.consumer.name for r in running], metrics=metrics_url
            )
            self.ready.set()
            await stop.wait()
            log.info("worker stopping", in_flight=len(self._in_flight))
            for item in running:
                await _bounded(item.queue.cancel(item.tag), "cancel the consumer")
            await self._drain()
            for item in running:
                # Closing the channel waits for the broker, so every ack sent before it counts.
                await _bounded(item.channel.close(), "close the channel")
        finally:
            await _bounded(connection.close(), "close the connection")
        log.info("worker stopped")

    async def _connect(self, stop: asyncio.Event) -> AbstractRobustConnection | None:
        """Connect, retrying until the broker answers or `stop` is set."""
        failures = 0
        while not stop.is_set():
            try:
                return await aio_pika.connect_robust(
                    self._settings.amqp_url.value, reconnect_interval=RECONNECT_SECONDS
                )
            except (OSError, aio_pika.exceptions.AMQPError) as exc:
                if failures == 0:
                    log.warning("broker unreachable; retrying", error=type(exc).__name__)
                delay = backoff(CONNECT_DELAYS, failures)
                failures += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        return None

    async def _start_all(
        self, connection: AbstractRobustConnection, stop: asyncio.Event
    ) -> list[_Running] | None:
        """Open the channels and declare every consumer's queues, retrying what may pass.

        Replicas that start at the same instant on a new broker race to create the same
        quorum queues, and the loser can get INTERNAL_ERROR (noproc) once: that, and any
        lost connection, is retried. A refusal that cannot pass (inequivalent queue
        arguments, no access) ends the worker.
        """
        failures = 0
        while not stop.is_set():
            opened: list[AbstractChannel] = []
            try:
                self._publisher = await connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                opened.append(self._publisher)
                running = []
                for consumer in self._consumers:
                    running.append(await self._start(connection, consumer, opened))
                return running
            except PERMANENT:
                raise
            except (
                aio_pika.exceptions.AMQPError,
                # aiormq's word for a channel or connection that closed meanwhile.
                RuntimeError,
                OSError,
                TimeoutError,
            ) as exc:
                _quietly(
                    log.warning,
                    "worker start failed; retrying",
                    error_type=type(exc).__name__,
                    error=safe_text(str(exc))[:300],
                )
                for channel in opened:
                    await _bounded(channel.close(), "close the channel")
                delay = backoff(CONNECT_DELAYS, failures)
                failures += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        return None

    async def _start(
        self,
        connection: AbstractRobustConnection,
        consumer: Consumer,
        opened: list[AbstractChannel],
    ) -> _Running:
        channel = await connection.channel()
        opened.append(channel)
        await channel.set_qos(prefetch_count=self._concurrency or consumer.concurrency)
        queue = await declare_consumer_topology(channel, self._names, consumer)
        await rewrite(channel, self._names, add=dict([entry_for(self._names.prefix, consumer)]))
        queues = ConsumerQueues(self._names.prefix, consumer.name)
        running = _Running(consumer, queues, channel, queue)
        # Read when scraped, so counting a message costs no lock.
        self.metrics.in_flight.labels(consumer.name).set_function(lambda: running.handling)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await self._handle(running, message)

        running.tag = await queue.consume(on_message)
        return running

    async def _drain(self) -> None:
        """Wait, bounded by SHUTDOWN_TIMEOUT, for in-flight handlers; cancel what is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.shutdown_timeout
        while True:
            # A delivery already received reaches `_handle` through two task hops.
            await asyncio.sleep(0.05)
            if not self._in_flight:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("handlers still running at the deadline; their messages go back")
                for task in self._in_flight:
                    task.cancel()
                # A handler that ignores its cancellation is left behind, bounded.
                if self._in_flight:
                    await asyncio.wait(set(self._in_flight), timeout=SHUTDOWN_STEP_TIMEOUT)
                return
            await asyncio.wait(set(self._in_flight), timeout=remaining)

    async def _handle(self, running: _Running, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        started = time.perf_counter()
        attempt = attempt_of(message)
        routing_key = routing_key_of(message)
        name = running.consumer.name
        running.handling += 1
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            consumer=running.consumer.name, message_id=message.message_id, attempt=attempt
        )
        try:
            outcome = await self._process(running, message, routing_key, attempt)
        except asyncio.CancelledError:
            _quietly(log.warning, "handler cancelled; the message goes back to the queue")
            raise
        except Exception as fault:
            # A fault of the runtime, not of the handler: never leave the message stranded.
            outcome = "ok"
            if not message.processed:
                await asyncio.sleep(_requeue_pause(message))
                await _settle(message.nack(requeue=True))
                outcome = "requeued"
            _quietly(log.error, "could not settle the message", outcome=outcome, exc_info=fault)
        finally:
            self._in_flight.discard(task)
            running.handling -= 1
        seconds = time.perf_counter() - started
        self.metrics.handled(name, routing_key, outcome, seconds)
        # Filtered messages are routine for a consumer of a few tenants: debug, not info.
        method = self._log.debug if outcome == "filtered" else self._log.info
        _quietly(method, "message handled", outcome=outcome, duration_ms=round(seconds * 1000, 2))

    async def _process(
        self, running: _Running, message: AbstractIncomingMessage, routing_key: str, attempt: int
    ) -> str:
        try:
            envelope = parse(message.body)
        except InvalidEnvelope as invalid:
            return await self._dead(
                running,
                message,
                body_digest(message.body),
                routing_key,
                attempt,
                invalid,
                "rejected",
            )
        event = event_from(message, envelope, routing_key, attempt)
        message_id = event.message_id
        structlog.contextvars.bind_contextvars(
            event_name=event.name, routing_key=routing_key, tenant_id=event.tenant_id
        )
        routes = running.consumer.routes_for(routing_key)
        taken = [route for route in routes if route.takes(event.tenant_id)]
        if routes and not taken:  # no handler takes this tenant
            await _settle(message.ack())
            return "filtered"
        try:
            if not routes:
                # During a rolling deploy another replica may know this pattern: retry.
                name = running.consumer.name
                raise NoHandler(f"no handler of {name!r} matches {routing_key!r}")
            for route in taken:
                await route.handler(event)
        except (Exception, asyncio.CancelledError) as failure:
            task = asyncio.current_task()
            if isinstance(failure, asyncio.CancelledError) and task and task.cancelling():
                raise  # the worker itself is cancelling the handler
            if rejected := _rejection(failure):
                return await self._dead(
                    running, message, message_id, routing_key, attempt, rejected, "rejected"
                )
            error_type = type(failure).__name__
            _quietly(log.warning, "handler failed", error_type=error_type, exc_info=failure)
            delays = running.consumer.retry_delays
            if attempt > len(delays):
                return await self._dead(
                    running, message, message_id, routing_key, attempt, failure, "dead"
                )
            extra = _failure(running, message, routing_key, attempt, failure)
            extra[ATTEMPT] = attempt + 1
            target = running.queues.retry(delays[attempt - 1])
            forwarded = await self._forward(message, message_id, target, extra)
            return "retried" if forwarded else "requeued"
        await _settle(message.ack())
        return "ok"

    async def _dead(
        self,
        running: _Running,
        message: AbstractIncomingMessage,
        message_id: str,
        routing_key: str,
        attempt: int,
        failure: BaseException,
        outcome: str,
    ) -> str:
        extra = _failure(running, message, routing_key, attempt, failure)
        forwarded = await self._forward(message, message_id, running.queues.dead, extra)
        return outcome if forwarded else "requeued"

    async def _forward(
        self, message: AbstractIncomingMessage, message_id: str, target: str, extra: FieldTable
    ) -> bool:
        """Publish a confirmed copy to `target`, then ack; on failure hand the message back.

        The copy carries `message_id`, the event's own, also when the message had none.
        """
        assert self._publisher is not None
        copy = copy_of(message, extra, message_id=message_id)
        try:
            async with asyncio.timeout(FORWARD_TIMEOUT):
                mine = await self._one_per_id.acquire(message_id)
                try:
                    await self._publisher.default_exchange.publish(
                        copy, routing_key=target, mandatory=True
                    )
                finally:
                    self._one_per_id.release(message_id, mine)
        except Exception as exc:
            await asyncio.sleep(_requeue_pause(message))
            await _settle(message.nack(requeue=True))
            _quietly(
                log.error,
                "broker did not take the copy; the message went back",
                target=target,
                error_type=type(exc).__name__,
            )
            return False
        await _settle(message.ack())
        return True


def _failure(
    running: _Running,
    message: AbstractIncomingMessage,
    routing_key: str,
    attempt: int,
    failure: BaseException,
) -> FieldTable:
    now = _now()
    first = (message.headers or {}).get("x-first-failure-at")
    return {
        "x-consumer": running.consumer.name,
        ROUTING_KEY: routing_key,
        "x-error-type": safe_text(type(failure).__name__),
        "x-error-message": safe_text(_describe(failure)[:MAX_ERROR_MESSAGE]),
        "x-attempts": attempt,
        "x-first-failure-at": first if isinstance(first, str) else now,
        "x-last-failure-at": now,
    }


def _describe(failure: BaseException) -> str:
    try:
        return str(failure)
    except Exception:  # an exception whose __str__ raises still gets its letter
        return f"<{type(failure).__name__} with an unprintable message>"


def _rejection(failure: BaseException) -> Reject | None:
    """The `Reject` in `failure`: itself, or the first one raised in a (nested) task group."""
    if isinstance(failure, Reject):
        return failure
    if isinstance(failure, BaseExceptionGroup):
        for inner in failure.exceptions:
            if (found := _rejection(inner)) is not None:
                return found
    return None


def _quietly(method: Callable[..., Any], event: str, **fields: Any) -> None:
    """Log, but never let a failing log call decide a message's fate."""
    with contextlib.suppress(Exception):  # there is nowhere left to report it
        method(event, **fields)


def _requeue_pause(message: AbstractIncomingMessage) -> float:
    count = (message.headers or {}).get("x-delivery-count")
    redeliveries = count if isinstance(count, int) and not isinstance(count, bool) else 0
    return float(min(REQUEUE_PAUSE * 2 ** min(redeliveries, 5), MAX_REQUEUE_PAUSE))


async def _bounded(step: Awaitable[object], what: str) -> None:
    """A shutdown step that may fail or hang without a link; the broker requeues what is left."""
    try:
        await asyncio.wait_for(step, SHUTDOWN_STEP_TIMEOUT)
    except Exception as exc:
        log.warning(f"could not {what}", error_type=type(exc).__name__)


async def _settle(step: Awaitable[None]) -> None:
    """Ack or nack; if the channel is gone the broker redelivers, so only log it."""
    try:
        await step
    except Exception as exc:
        log.warning(
            "could not settle the message; the broker will redeliver it",
            error_type=type(exc).__name__,
        )
