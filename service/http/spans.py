"""The delivery's SERVER span, used only while tracing is on (`service.observability.tracing`).

A SERVER span per delivery, with HTTP's semantic conventions and the outcome; a new
trace of our own, unless `TRACE_SENDER_CONTEXT=authenticated` lets an authenticated
delivery's `traceparent` be its parent. Storing is its child
(`service.observability.spans`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from contextvars import Token
from typing import Any

from aiohttp import web
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from service.http.app import OUTCOME, SPAN_START
from service.observability import sampling
from service.observability.sampling import Dropped

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
        decided = False
        dropping: Token[Dropped | None] | None = None

        def start(authenticated: bool) -> None:
            nonlocal span, token, decided, dropping
            if decided:
                return
            decided = True
            trusted = continue_sender and authenticated
            verdict = None if trusted else sampling.decide(tracer, name)
            if isinstance(verdict, Dropped):
                # Not sampled: no span, no context, no attributes; the ids alone go on.
                dropping = sampling.dropped.set(verdict)
                return
            with sampling.chosen(verdict) if verdict is not None else nullcontext():
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
            if span is not None:
                span.set_attribute("http.response.status_code", response.status)
                outcome = request.get(OUTCOME)
                if outcome:
                    span.set_attribute("relay.outcome", outcome)
                if response.status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            return response
        except Exception as error:
            start(False)
            if span is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            if span is not None:
                span.end()
            if token is not None:
                context.detach(token)  # type: ignore[arg-type]
            if dropping is not None:
                sampling.dropped.reset(dropping)

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
