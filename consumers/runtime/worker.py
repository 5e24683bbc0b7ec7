"""The worker: runs consumers in one process and carries out every message's fate.

The fate is decided in one place, `consumers.runtime.fate`. A message is acked only
after its handlers return. A handler that raises sends a copy to the retry queue for
its attempt, which dead-letters it back after the delay; after the last attempt, or on
`Reject`, the copy goes to `.dead`. The copy is confirmed by the broker before the
original is acked, so no path loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)

from consumers.consumer import Consumer, check_unique
from consumers.dedupe import Patience, open_store
from consumers.event import ATTEMPT, attempt_of, event_from, routing_key_of
from consumers.operations.registry import enrol
from consumers.runtime import reports, resources
from consumers.runtime.acks import Acks
from consumers.runtime.copies import Copies
from consumers.runtime.failures import failure_headers, requeue_pause
from consumers.runtime.fate import SETTLED, Call, decide, direct
from consumers.runtime.metrics import WorkerMetrics, serve_metrics
from consumers.runtime.reports import Reporter, keep_reporting
from consumers.runtime.returns import Returns
from consumers.runtime.session import Session, open_session
from consumers.runtime.settling import STEP_TIMEOUT, bounded, quietly, settle
from consumers.settings import WorkerSettings
from consumers.topology import ConsumerQueues
from service.observability.logs import bound_logger
from service.shared import brokers
from service.shared.brokers import Nodes
from service.shared.bus import BusNames
from service.shared.envelope import body_digest, parse
from service.shared.errors import InvalidEnvelope
from service.shared.supervise import keep_running, stop_insisting
from service.shared.text import safe_text
from service.shared.timing import backoff

log = structlog.get_logger("consumers.worker")

CONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)
# Refusals at start that no retry can change: the worker stops and says why.
PERMANENT = (
    aiormq.exceptions.ChannelPreconditionFailed,
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ConnectionNotAllowed,
)


@dataclass(slots=True)
class _Running:
    consumer: Consumer
    queues: ConsumerQueues
    channel: AbstractChannel
    queue: AbstractQueue
    once: Patience | None = None  # the dedupe store, for a consumer with dedupe on
    returns: Returns | None = None  # due retries brought back by this worker
    acks: Acks = field(default_factory=Acks)  # of this channel's deliveries
    tag: str = ""
    handling: int = 0


class Worker:
    """Runs `consumers` until `stop` is set, then drains in-flight handlers and exits."""

    def __init__(
        self,
        consumers: Sequence[Consumer],
        settings: WorkerSettings,
        *,
        concurrency: int | None = None,
        tracer: Any = None,
    ) -> None:
        """`tracer` (from `service.observability.tracing`) traces each handling.

        The spans are `consumers.runtime.spans`.
        """
        check_unique(consumers)
        self._tracer = tracer
        self._spans: Any = None
        if tracer is not None:
            from consumers.runtime import spans

            self._spans = spans
        self._consumers = tuple(consumers)
        self._settings = settings
        self._names = BusNames(settings.bus_prefix)
        self._concurrency = concurrency
        self._in_flight: set[asyncio.Task[None]] = set()
        self._copies = Copies()
        self.metrics = WorkerMetrics()
        self._reporter = Reporter(
            self._names, tuple(c.name for c in self._consumers), self.metrics.tally
        )
        self._log = bound_logger("consumers.worker")
        # Asked once: a line per message that the level drops is not even built.
        self._logs_handled = self._log.is_enabled_for(logging.INFO)
        self._logs_filtered = self._log.is_enabled_for(logging.DEBUG)
        self.ready = asyncio.Event()
        self._once: Patience | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set.

        Raises `SettingsError` if a set METRICS_PORT is taken or a consumer needs
        DEDUPE_DATABASE_URL, and `StoreUnreachable` if that database cannot be used.
        """
        try:
            for consumer in self._consumers:
                for hook in consumer.starting:
                    await hook()
        except BaseException:
            await resources.close_all()
            raise
        store = await open_store(self._consumers, self._settings)
        pruning = None
        if store is not None:
            self._once = Patience(store)
            pruning = keep_running("dedupe-pruner", store.prune_forever)
        try:
            metrics = await serve_metrics(self.metrics, self._settings.metrics_port)
            try:
                await self._run(stop, metrics.url if metrics else None)
            finally:
                if metrics is not None:
                    await metrics.runner.cleanup()
        finally:
            # Insisting is safe: a second cancel only ends a prune (or, below, a report) early.
            await stop_insisting(pruning)
            if store is not None:
                await store.close()
            # Handlers have drained: what they shared (an API client's pool) can go.
            await resources.close_all()

    async def _run(self, stop: asyncio.Event, metrics_url: str | None) -> None:
        nodes = Nodes(brokers.split(self._settings.amqp_url.value))
        event = "worker started"
        while not stop.is_set():
            session = await open_session(nodes, stop)
            if session is None:
                break
            try:
                running = await self._start_all(session, stop)
                if running is None:
                    break
                log.info(
                    event,
                    consumers=[r.consumer.name for r in running],
                    broker=session.node,
                    metrics=metrics_url,
                )
                event = "worker reconnected"
                self.ready.set()
                reporting = asyncio.create_task(keep_reporting(self._reporter, session.publishing))
                try:
                    await _first(stop.wait(), session.lost())
                finally:
                    await stop_insisting(reporting)
                if stop.is_set():
                    await self._stop_running(running)
                    await bounded(self._reporter.last_word(session.publishing), "report")
                    break
                # What is in flight cannot be settled on the lost channels: the broker
                # hands those messages out again.
                log.warning(
                    "broker connection lost; connecting again",
                    broker=session.node,
                    in_flight=len(self._in_flight),
                )
                for item in running:
                    if item.returns is not None:
                        await item.returns.close()
            except _SessionLost:
                log.warning("broker connection lost while starting", broker=session.node)
            finally:
                await session.close()
            nodes.advance()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CONNECT_DELAYS[0])
        log.info("worker stopped")

    async def _stop_running(self, running: list[_Running]) -> None:
        log.info("worker stopping", in_flight=len(self._in_flight))
        for item in running:
            await bounded(item.queue.cancel(item.tag), "cancel the consumer")
            if item.returns is not None:
                await item.returns.close()
        await self._drain()
        for item in running:
            # Closing the channel waits for the broker, so every ack sent before it counts.
            await bounded(item.channel.close(), "close the channel")

    async def _start_all(self, session: Session, stop: asyncio.Event) -> list[_Running] | None:
        """Open the channels and declare every consumer's queues, retrying what may pass.

        Replicas that start at the same instant on a new broker race to create the same
        quorum queues, and the loser can get INTERNAL_ERROR (noproc) once: that is
        retried. A refusal that cannot pass (inequivalent queue arguments, no access)
        ends the worker; a lost connection raises `_SessionLost`.
        """
        failures = 0
        while not stop.is_set():
            opened: list[AbstractChannel] = []
            try:
                publisher = await session.publishing.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                opened.append(publisher)
                await session.watch(publisher)
                self._copies.use(session, publisher)
                # Created here, where the race of replicas starting together is retried,
                # rather than by the reports once the worker has started.
                await reports.declare(session.publishing, self._names)
                running = []
                for consumer in self._consumers:
                    running.append(await self._start(session.consuming, consumer, opened))
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
                if session.is_closed:
                    raise _SessionLost from exc
                quietly(
                    log.warning,
                    "worker start failed; retrying",
                    error_type=type(exc).__name__,
                    error=safe_text(str(exc))[:300],
                )
                for channel in opened:
                    await bounded(channel.close(), "close the channel")
                delay = backoff(CONNECT_DELAYS, failures)
                failures += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        return None

    async def _start(
        self,
        connection: AbstractConnection,
        consumer: Consumer,
        opened: list[AbstractChannel],
    ) -> _Running:
        channel = await connection.channel()
        opened.append(channel)
        await channel.set_qos(prefetch_count=self._concurrency or consumer.concurrency)
        queue = await enrol(connection, channel, self._names, consumer)
        queues = ConsumerQueues(self._names.prefix, consumer.name)
        once = self._once if consumer.dedupe else None
        running = _Running(consumer, queues, channel, queue, once)
        # Read when scraped, so counting a message costs no lock.
        self.metrics.in_flight.labels(consumer.name).set_function(lambda: running.handling)

        handle = self._handle if self._spans is None else self._traced

        async def on_message(message: AbstractIncomingMessage) -> None:
            await handle(running, message)

        running.tag = await queue.consume(on_message)
        running.returns = Returns(queues, self._copies.send_back)
        await running.returns.start(connection, consumer.retry_delays, opened)
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
                    await asyncio.wait(set(self._in_flight), timeout=STEP_TIMEOUT)
                return
            await asyncio.wait(set(self._in_flight), timeout=remaining)

    async def _traced(self, running: _Running, message: AbstractIncomingMessage) -> None:
        """`_handle` inside its CONSUMER span; chosen only while tracing is on."""
        with self._spans.handling(
            self._tracer,
            running.queue.name,
            running.consumer.name,
            message,
            routing_key_of(message),
            attempt_of(message),
        ):
            await self._handle(running, message)

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
            quietly(log.warning, "handler cancelled; the message goes back to the queue")
            raise
        except Exception as fault:
            # A fault of the runtime, not of the handler: never leave the message stranded.
            outcome = "ok"
            if not message.processed:
                await asyncio.sleep(requeue_pause(message))
                await settle(message.nack(requeue=True))
                outcome = "requeued"
            quietly(log.error, "could not settle the message", outcome=outcome, exc_info=fault)
        finally:
            # Forwarded, nacked or acked: the ack window counts it settled (once queued).
            running.acks.settled(message)
            self._in_flight.discard(task)
            running.handling -= 1
        seconds = time.perf_counter() - started
        self.metrics.handled(name, routing_key, outcome, seconds)
        if self._spans is not None:
            self._spans.outcome(outcome)
        # Filtered messages are routine for a consumer of a few tenants: debug, not info.
        filtered = outcome == "filtered"
        if self._logs_filtered if filtered else self._logs_handled:
            method = self._log.debug if filtered else self._log.info
            duration_ms = round(seconds * 1000, 2)
            quietly(method, "message handled", outcome=outcome, duration_ms=duration_ms)

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
        structlog.contextvars.bind_contextvars(
            event_name=event.name, routing_key=routing_key, tenant_id=event.tenant_id
        )
        fate = await decide(running.consumer, event, once=running.once, call=self._call(running))
        if fate.outcome in SETTLED:
            await settle(running.acks.ack(message))
            return fate.outcome
        assert fate.failure is not None
        if self._spans is not None:
            self._spans.failed(fate.failure)
        if fate.outcome != "rejected":
            error_type = type(fate.failure).__name__
            quietly(log.warning, "handler failed", error_type=error_type, exc_info=fate.failure)
        if fate.delay is None:
            return await self._dead(
                running, message, event.message_id, routing_key, attempt, fate.failure, fate.outcome
            )
        extra = failure_headers(running.consumer.name, message, routing_key, attempt, fate.failure)
        extra[ATTEMPT] = attempt + 1
        target = running.queues.retry(fate.delay)
        forwarded = await self._copies.forward(message, event.message_id, target, extra)
        return "retried" if forwarded else "requeued"

    def _call(self, running: _Running) -> Call:
        """How a handler is called: in a span of its own while tracing is on."""
        if self._spans is None:
            return direct
        return functools.partial(self._spans.call, self._tracer, running.consumer.name)

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
        extra = failure_headers(running.consumer.name, message, routing_key, attempt, failure)
        forwarded = await self._copies.forward(message, message_id, running.queues.dead, extra)
        return outcome if forwarded else "requeued"


class _SessionLost(Exception):
    """The broker connection closed while the worker was starting on it."""


async def _first(*waits: Awaitable[object]) -> None:
    """Return once any of `waits` is done; cancel the rest."""
    tasks = {asyncio.ensure_future(each) for each in waits}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
