"""The receiver's spans, used only while tracing is on (`service.tracing`).

A SERVER span per delivery, with HTTP's semantic conventions and the outcome; a new
trace of our own, unless `TRACE_SENDER_CONTEXT=authenticated` lets an authenticated
delivery's `traceparent` be its parent. Storing is a PRODUCER child (`publish
{exchange}`), whose context goes into the message's `traceparent` and `tracestate`
headers, so that the spool, retries, dead letters and replays keep it; a delivery the
broker does not take gets a `spool` child. A spooled record's later publish is a
child of the context it carries.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from service.app import OUTCOME, SPAN_START
from service.bus import Outgoing
from service.errors import PublishFailed

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def traced(handler: Handler, tracer: Any, route: str, *, continue_sender: bool) -> Handler:
    """`handler` inside a SERVER span per request.

    The span starts once the handler knows whether the delivery authenticated (it calls
    `SPAN_START`), timed from the request's arrival. Its parent is the sender's
    `traceparent` only with `continue_sender` and an authenticated delivery: otherwise
    anyone could choose our sampling and write into our traces.
    """
    name = f"POST {route}"

    async def serve(request: web.Request) -> web.StreamResponse:
        arrived = time.time_ns()
        span: Any = None
        token: object = None

        def start(authenticated: bool) -> None:
            nonlocal span, token
            if span is not None:
                return
            trusted = continue_sender and authenticated
            span = tracer.start_span(
                name,
                context=propagate.extract(request.headers) if trusted else Context(),
                kind=SpanKind.SERVER,
                attributes=_http_attributes(request, route),
                start_time=arrived,
            )
            # Current for the rest of the request: its children and its log line see it.
            token = context.attach(trace.set_span_in_context(span))

        request[SPAN_START] = start
        try:
            response = await handler(request)
            start(False)
            span.set_attribute("http.response.status_code", response.status)
            outcome = request.get(OUTCOME)
            if outcome:
                span.set_attribute("relay.outcome", outcome)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response
        except Exception as error:
            start(False)
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            if span is not None:
                span.end()
            if token is not None:
                context.detach(token)  # type: ignore[arg-type]

    return serve


def _http_attributes(request: web.Request, route: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "http.request.method": request.method,
        "http.route": route,
        "url.path": request.path,
        "url.scheme": request.scheme,
        "server.address": request.host.rsplit(":", 1)[0],
        "network.protocol.version": f"{request.version.major}.{request.version.minor}",
    }
    if request.remote:
        attributes["client.address"] = request.remote
    agent = request.headers.get("User-Agent")
    if agent:
        attributes["user_agent.original"] = agent
    return attributes


def _messaging(message: Outgoing, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": operation,
        "messaging.operation.name": "publish",
        "messaging.destination.name": message.exchange or "amq.default",
        "messaging.rabbitmq.destination.routing_key": message.routing_key,
        "messaging.message.id": message.message_id,
        "messaging.message.body.size": len(message.body),
    }


async def store(
    tracer: Any,
    message: Outgoing,
    publish: Callable[[Outgoing], Awaitable[None]],
    spool: Callable[[Outgoing], Awaitable[None]] | None,
) -> tuple[Literal["broker", "spool"], str | None]:
    """Publish `message` (or spool it) inside a PRODUCER span whose context it carries."""
    name = f"publish {message.exchange or message.routing_key}"
    with tracer.start_as_current_span(
        name, kind=SpanKind.PRODUCER, attributes=_messaging(message, "send")
    ) as span:
        headers = message.properties.headers
        if headers is None:
            headers = message.properties.headers = {}
        propagate.inject(headers)
        try:
            await publish(message)
        except PublishFailed as failure:
            span.set_attribute("error.type", type(failure).__name__)
            if spool is None:
                span.set_status(Status(StatusCode.ERROR, type(failure).__name__))
                raise
            with tracer.start_as_current_span(
                "spool", attributes={"relay.cause": type(failure).__name__}
            ):
                await spool(message)
            span.set_attribute("relay.stored", "spool")
            return "spool", type(failure).__name__
        span.set_attribute("relay.stored", "broker")
        return "broker", None


def draining(
    tracer: Any, publish: Callable[[Outgoing], Awaitable[None]]
) -> Callable[[Outgoing], Awaitable[None]]:
    """`publish` for spooled records: a PRODUCER span, child of the record's own context."""

    async def republish(message: Outgoing) -> None:
        parent = propagate.extract(message.properties.headers or {})
        with tracer.start_as_current_span(
            f"publish {message.exchange} from the spool",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes=_messaging(message, "send"),
        ) as span:
            try:
                await publish(message)
            except Exception as failure:
                span.set_attribute("error.type", type(failure).__name__)
                span.set_status(Status(StatusCode.ERROR, type(failure).__name__))
                raise

    return republish


def current_ids() -> tuple[str, str] | None:
    """The current span's trace and span id in hex, for log lines; None outside one."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
