"""The HTTP application: the webhook endpoint, the probes and metrics, built by a factory."""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST

from service.http.auth import Authenticator
from service.http.damping import FailureDamper
from service.http.delivery_ids import delivery_id
from service.observability.lines import LineWriter, info_lines
from service.observability.metrics import ReceiverMetrics
from service.publishing.publisher import AmqpPublisher, Publisher
from service.settings import Settings
from service.shared import envelope
from service.shared.bus import BusNames, Outgoing, Receipt, event_message, invalid_message
from service.shared.errors import InvalidEnvelope, PublishFailed, Unauthorized
from service.spool.drain import DrainState
from service.spool.segments import SpoolError
from service.store import DurableStore

WEBHOOK_PATH = "/webhooks/avionte"
# Avionté retries on its own schedule; this hints other senders not to hammer a recovering broker.
RETRY_AFTER_SECONDS = "5"
# The client hung up before its body was complete; nothing is sent. nginx's name for it.
CLIENT_GONE = 499

log = structlog.get_logger("service.delivery")


@dataclass(slots=True)
class Lifecycle:
    """Shutdown, in two steps: first not ready, then no more intake."""

    shutting_down: bool = False
    intake_closed: bool = False


@dataclass(frozen=True, slots=True)
class Context:
    """What the webhook handler needs, fixed when the app is built."""

    settings: Settings
    names: BusNames
    authenticator: Authenticator
    store: DurableStore
    damper: FailureDamper
    metrics: ReceiverMetrics
    log: LineWriter
    traced: bool = False
    # Tracing continues an authenticated sender's context: the span starts mid-request.
    span_starts_late: bool = False
    lifecycle: Lifecycle = field(default_factory=Lifecycle)


CONTEXT = web.AppKey("context", Context)
# A delivery's outcome, for its span (`service.http.spans`) while tracing is on.
OUTCOME = web.RequestKey("outcome", str)
# Starts the delivery's span (once), told whether the delivery authenticated; only while
# tracing continues a sender's context (`Context.span_starts_late`).
SPAN_START: web.RequestKey[Callable[[bool], None]] = web.RequestKey("span_start")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The webhook's handler (traced, when tracing is on), for the front door; traced, it
# returns an awaitable without being a coroutine function (`routable` wraps it).
WEBHOOK: web.AppKey[Handler] = web.AppKey("webhook")


def _json(status: int, payload: dict[str, Any], **headers: str) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


def _unavailable() -> web.Response:
    return _json(503, {"status": "unavailable"}, **{"Retry-After": RETRY_AFTER_SECONDS})


async def receive(ctx: Context, request: web.Request) -> web.Response:
    """Authenticate a delivery, publish it with a confirm, and answer; log one line for it.

    `ctx` is bound when the app is built: the handler never asks `request.app`, so the
    front door (`service.http.front`) can call it without the router's match.
    """
    started = time.perf_counter()
    sources = ctx.settings.sources
    # Addresses are parsed only when a policy needs them; the log takes the peer as is.
    client = None
    if sources.allowed or sources.trusted_proxies:
        client = sources.client(request.remote, request.headers.getall("X-Forwarded-For", []))
    source = str(client) if client is not None else str(request.remote)
    line: dict[str, Any] = {"delivery_id": delivery_id(), "remote": source}

    def done(response: web.Response, outcome: str) -> web.Response:
        ms = round((time.perf_counter() - started) * 1000, 2)
        ctx.metrics.delivery(outcome, line.get("routing_key"), line.get("tenant_id"))
        if ctx.traced:
            if ctx.span_starts_late:
                request[SPAN_START](False)
            request[OUTCOME] = outcome
        status = response.status
        ctx.log("delivery", {"outcome": outcome, "status": status, "duration_ms": ms, **line})
        return response

    if ctx.lifecycle.intake_closed:
        return done(_unavailable(), "shutting_down")
    if not sources.admits(client):
        return done(_json(403, {"status": "forbidden"}), "forbidden")
    limit = ctx.settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return done(_json(413, {"status": "too_large", "limit": limit}), "too_large")
    try:
        if request.content.is_eof():
            # The whole body came with the headers: no timer to arm.
            body = await request.read()
        else:
            async with asyncio.timeout(ctx.settings.body_timeout):
                body = await request.read()
    except TimeoutError:
        return done(_json(408, {"status": "body_timeout"}, Connection="close"), "bad_request")
    except web.HTTPRequestEntityTooLarge:
        return done(_json(413, {"status": "too_large", "limit": limit}), "too_large")
    except HttpProcessingError:
        return done(_json(400, {"status": "bad_request"}), "bad_request")
    except ConnectionError:
        return done(_json(CLIENT_GONE, {"status": "client_gone"}), "client_gone")

    try:
        method = ctx.authenticator.authenticate(
            body,
            api_key=request.headers.get("X-api-key"),
            signature=request.headers.get("X-Payload-Signature"),
        )
    except Unauthorized:
        wait = ctx.damper.fail(source, asyncio.get_running_loop().time())
        if wait is not None:
            retry_after = str(math.ceil(wait))
            return done(
                _json(429, {"status": "throttled"}, **{"Retry-After": retry_after}), "throttled"
            )
        return done(_json(401, {"status": "unauthorized"}), "unauthorized")

    if ctx.span_starts_late:
        request[SPAN_START](True)
    receipt = Receipt(line["delivery_id"], method, datetime.now(UTC))
    line["auth"] = str(method)
    message: Outgoing
    try:
        # The server does not decompress bodies: signatures cover the bytes as sent, and
        # an encoded body is kept as sent, in quarantine.
        if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
            raise InvalidEnvelope("content_encoding")
        parsed = envelope.parse(body)
    except Exception as failure:
        reason = failure.reason if isinstance(failure, InvalidEnvelope) else "parse_error"
        if reason == "parse_error":
            # A bug, not bad input; the delivery is still kept, in quarantine.
            log.exception("parsing raised unexpectedly", **line)
        message, outcome = invalid_message(ctx.names, body, reason, receipt), "quarantined"
        line["reason"] = reason
    else:
        message, outcome = event_message(ctx.names, parsed, body, receipt), "accepted"
        line.update(
            event_name=parsed.event_name,
            routing_key=parsed.routing_key,
            tenant_id=parsed.tenant_id,
        )
    line["message_id"] = message.message_id

    try:
        ctx.metrics.storing += 1
        try:
            where, cause = await ctx.store.store(message)
            line["stored"] = where
            if cause is not None:
                line["spooled_because"] = cause
        finally:
            ctx.metrics.storing -= 1
        ctx.metrics.stored(where).observe(time.perf_counter() - started)
    except (PublishFailed, SpoolError) as failure:
        line["error"] = type(failure).__name__
        return done(_unavailable(), "unavailable")
    except Exception:
        # Nothing was stored, so the only honest answer is a deliberate 503.
        log.exception("storing raised unexpectedly", **line)
        return done(_unavailable(), "unavailable")
    return done(_json(200, {"status": outcome, "id": message.message_id}), outcome)


def routable(handler: Handler) -> Handler:
    """`handler` as the coroutine function aiohttp's router asks for."""
    if inspect.iscoroutinefunction(handler):
        return handler

    async def routed(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    return routed


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return _json(200, {"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: deliveries can be stored durably and the receiver is not shutting down."""
    ctx = request.app[CONTEXT]
    ready = ctx.store.ready and not ctx.lifecycle.shutting_down
    payload = {
        "status": "ready" if ready else "not_ready",
        **ctx.store.status(),
        "shutting_down": ctx.lifecycle.shutting_down,
    }
    return _json(200 if ready else 503, payload)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics, in the text format."""
    ctx = request.app[CONTEXT]
    state = ctx.store.publisher.state
    ctx.metrics.broker_connected.set(0 if state == "disconnected" else 1)
    ctx.metrics.broker_blocked.set(1 if state == "blocked" else 0)
    spool = ctx.store.spool
    if spool is not None:
        depth = spool.depth
        ctx.metrics.spool_records.set(depth.records)
        ctx.metrics.spool_bytes.set(depth.bytes)
    drain = ctx.store.drain_status()
    if drain is not None:
        ctx.metrics.spool_drain_stalled.set(1 if drain.state is DrainState.STALLED else 0)
        ctx.metrics.spool_parked.set(drain.parked)
    return web.Response(body=ctx.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _store_lifetime(app: web.Application) -> AsyncIterator[None]:
    store = app[CONTEXT].store
    await store.start()
    yield
    await store.close()


def create_app(
    settings: Settings, *, publisher: Publisher | None = None, tracer: Any = None
) -> web.Application:
    """Build the receiver. Tests pass their own `publisher`; otherwise it talks to AMQP_URL.

    With `tracer` (from `service.observability.tracing`), each delivery is traced
    (`service.http.spans`).
    """
    names = BusNames(settings.bus_prefix)
    receiver_metrics = ReceiverMetrics()

    def crashed(task: str) -> None:
        receiver_metrics.restart(task).inc()

    if publisher is None:
        publisher = AmqpPublisher(
            settings.amqp_url.value, names, timeout=settings.publish_timeout, on_crash=crashed
        )
    authenticator = Authenticator(
        api_keys=[key.value for key in settings.api_keys],
        shared_secrets=[secret.value for secret in settings.shared_secrets],
    )
    app = web.Application(client_max_size=settings.max_body_bytes)
    store = DurableStore(
        publisher,
        spool_dir=settings.spool_dir,
        spool_max_bytes=settings.spool_max_bytes,
        on_drained=receiver_metrics.spool_drained.inc,
        on_drain_failure=lambda cause: receiver_metrics.drain_failure(cause).inc(),
        on_crash=crashed,
        tracer=tracer,
    )
    damper = FailureDamper(limit=settings.auth_failure_limit, window=settings.auth_failure_window)
    app[CONTEXT] = Context(
        settings,
        names,
        authenticator,
        store,
        damper,
        receiver_metrics,
        info_lines("service.delivery"),
        traced=tracer is not None,
        span_starts_late=tracer is not None and settings.trace_sender_context == "authenticated",
    )
    app.cleanup_ctx.append(_store_lifetime)
    webhook: Handler = partial(receive, app[CONTEXT])
    if tracer is not None:
        from service.http import spans

        continues = app[CONTEXT].span_starts_late
        webhook = spans.traced(webhook, tracer, WEBHOOK_PATH, continue_sender=continues)
    app.router.add_post(WEBHOOK_PATH, routable(webhook))
    app[WEBHOOK] = webhook
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
