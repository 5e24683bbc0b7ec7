"""The delivery's SERVER span, used only while tracing is on (`service.observability.tracing`).

A SERVER span per delivery, with HTTP's semantic conventions and the outcome; a new
trace of our own, unless `TRACE_SENDER_CONTEXT=authenticated` lets an authenticated
delivery's `traceparent` be its parent. Storing adds the publish's attributes to it
(`service.observability.spans`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from contextvars import Token
from typing import Any

from aiohttp import web
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from service.http.app import OUTCOME, SPAN_START, Handler
from service.observability import sampling, tracing
from service.observability.recorded import RecordedSpan
from service.observability.sampling import Kept


def traced(handler: Handler, tracer: Any, route: str, *, continue_sender: bool) -> Handler:
    """`handler` inside a SERVER span per request, timed from the request's arrival.

    Without `continue_sender` every delivery starts a trace of our own, so its sampling
    is decided before anything else: a dropped one is `handler`'s own coroutine, run
    with its `traceparent` alone (`sampling.dropped`), no span, no closure and no frame
    of ours.
    The result is then not a coroutine function: route it through `routable`.

    With `continue_sender`, the span starts once the handler knows whether the delivery
    authenticated (it calls `SPAN_START`): only an authenticated delivery's `traceparent`
    may be the parent, or anyone could choose our sampling and write into our traces.
    """
    name = f"POST {route}"
    decide = sampling.decider(tracer)

    def own(request: web.Request) -> Awaitable[web.StreamResponse]:
        # Not a coroutine: a dropped delivery is the handler's own coroutine, with no
        # frame of ours for every resumption to pass through. A dropped delivery's
        # verdict, its `traceparent`, needs no reset: aiohttp runs each request in a
        # task of its own, in a copy of the context.
        verdict = decide(name)
        if isinstance(verdict, str):
            sampling.dropped.set(verdict)
            return handler(request)
        if sampling.dropped.get() is not None:  # a caller that reuses one context
            sampling.dropped.set(None)
        span = _start(tracer, name, request, route, Context(), time.time_ns(), verdict)
        return _within(span, handler, request)

    async def continued(request: web.Request) -> web.StreamResponse:
        arrived = time.time_ns()
        span: Any = None
        settled = False
        token: object = None
        recording: Token[Any] | None = None
        dropping: Token[str | None] | None = None

        def start(authenticated: bool) -> None:
            nonlocal span, settled, token, recording, dropping
            if settled:
                return
            settled = True
            verdict = None if authenticated else decide(name)
            if isinstance(verdict, str):
                dropping = sampling.dropped.set(verdict)
                return
            parent = propagate.extract(request.headers) if authenticated else Context()
            span = _start(tracer, name, request, route, parent, arrived, verdict)
            # Current for the rest of the request: its children and its log line see it.
            if isinstance(span, RecordedSpan):
                recording = sampling.recording.set(span)
            else:
                token = context.attach(trace.set_span_in_context(span))

        request[SPAN_START] = start
        try:
            response = await handler(request)
            start(False)
        except BaseException as error:
            start(False)
            if span is not None:
                _failed(span, error)
            raise
        finally:
            # `start` refers to the request, which must not keep it: that cycle would
            # leave every request to the garbage collector.
            request[SPAN_START] = _started
            if token is not None:
                context.detach(token)  # type: ignore[arg-type]
            if recording is not None:
                sampling.recording.reset(recording)
            if dropping is not None:
                sampling.dropped.reset(dropping)
        return response if span is None else _ended(span, response, request)

    return continued if continue_sender else own


def _started(authenticated: bool) -> None:
    """`SPAN_START` once the delivery's span (or its sampling) is settled."""


def _start(
    tracer: Any,
    name: str,
    request: web.Request,
    route: str,
    parent: Context,
    arrived: int,
    kept: Kept | None,
) -> Any:
    """The delivery's span: recorded when the sampler kept a root span of ours, else the SDK's."""
    attributes = _http_attributes(request, route)
    if kept is None:
        return tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes, start_time=arrived
        )
    hand = tracing.recorder()
    if hand is None or not kept.sampled:
        with sampling.chosen(kept.trace_id):
            return tracer.start_span(
                name,
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                start_time=arrived,
            )
    ids = SpanContext(
        kept.trace_id,
        tracer.id_generator.generate_span_id(),
        is_remote=False,
        trace_flags=TraceFlags(kept.flags),
        trace_state=kept.trace_state,
    )
    return RecordedSpan(
        name,
        ids,
        hand=hand,
        scope=tracing.SCOPE,
        kind=SpanKind.SERVER,
        attributes={**kept.attributes, **attributes} if kept.attributes else attributes,
        start_time=arrived,
    )


async def _within(span: Any, handler: Handler, request: web.Request) -> web.StreamResponse:
    """Run `handler` with `span` current (its children and log line see it), then end it."""
    recorded = isinstance(span, RecordedSpan)
    if recorded:
        token: Any = sampling.recording.set(span)
    else:
        token = context.attach(trace.set_span_in_context(span))
    try:
        response = await handler(request)
    except BaseException as error:
        _failed(span, error)
        raise
    finally:
        if recorded:
            sampling.recording.reset(token)
        else:
            context.detach(token)
    return _ended(span, response, request)


def _failed(span: Any, error: BaseException) -> None:
    """End `span` for a handler that raised; a cancelled request is not an error."""
    if isinstance(error, Exception):
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()


def _ended(span: Any, response: web.StreamResponse, request: web.Request) -> web.StreamResponse:
    ended: dict[str, Any] = {"http.response.status_code": response.status}
    outcome = request.get(OUTCOME)
    if outcome:
        ended["relay.outcome"] = outcome
    span.set_attributes(ended)
    if response.status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()
    return response


def _http_attributes(request: web.Request, route: str) -> dict[str, Any]:
    """HTTP's required attributes, the route and the peer: each costs a sampled delivery."""
    attributes: dict[str, Any] = {
        "http.request.method": request.method,
        "http.route": route,
        "url.path": request.path,
        "url.scheme": request.scheme,
    }
    if request.remote:
        attributes["client.address"] = request.remote
    return attributes
