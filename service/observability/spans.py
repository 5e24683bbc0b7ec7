"""The receiver's spans, used only while tracing is on (`service.observability.tracing`).

A SERVER span per delivery, with HTTP's semantic conventions and the outcome; a new
trace of our own, unless `TRACE_SENDER_CONTEXT=authenticated` lets an authenticated
delivery's `traceparent` be its parent. The span also says what was published (the
messaging attributes) and its context goes into the message's `traceparent` and
`tracestate` headers, so that the spool, retries, dead letters and replays keep it; a
delivery the broker does not take gets a `spool` child. A spooled record's later
publish is a PRODUCER span, child of the context it carries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from service.observability import tracing
from service.observability.recorded import RecordedSpan
from service.observability.sampling import dropped, ids, recording
from service.shared.bus import Outgoing
from service.shared.errors import PublishFailed

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _messaging(message: Outgoing) -> dict[str, Any]:
    return {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": message.exchange or "amq.default",
        "messaging.rabbitmq.destination.routing_key": message.routing_key,
        "messaging.message.id": message.message_id,
    }


async def store(
    tracer: Any,
    message: Outgoing,
    publish: Callable[[Outgoing], Awaitable[None]],
    spool: Callable[[Outgoing], Awaitable[None]] | None,
) -> tuple[Literal["broker", "spool"], str | None]:
    """Publish `message` (or spool it) as part of the current (SERVER) span.

    The message carries that span's context, and the span gets the publish's messaging
    attributes, in one call: a second span a delivery would double what a sampled
    delivery costs. A spool write is a child span of its own.
    """
    span = recording.get()
    headers = message.properties.headers
    if headers is None:
        headers = message.properties.headers = {}
    if span is None:
        span = trace.get_current_span()
        propagate.inject(headers)
    else:
        _carry(span, headers)
    where: Literal["broker", "spool"] = "broker"
    cause = None
    try:
        try:
            await publish(message)
        except PublishFailed as failure:
            if spool is None:
                raise
            where, cause = "spool", type(failure).__name__
            with tracer.start_as_current_span(
                "spool", context=trace.set_span_in_context(span), attributes={"relay.cause": cause}
            ):
                await spool(message)
    except Exception as error:
        # Nothing stored it, and the answer is a 503: say why on the delivery's span.
        span.record_exception(error)
        span.set_attribute("error.type", type(error).__name__)
        raise
    if span.is_recording():
        stored = _messaging(message)
        stored["relay.stored"] = where
        span.set_attributes(stored)
    return where, cause


def _carry(span: RecordedSpan, headers: dict[str, Any]) -> None:
    """A recorded span's context into `headers`, as the configured propagators would write it."""
    if not tracing.w3c_propagation():
        propagate.inject(headers, context=trace.set_span_in_context(span))
        return
    # W3C trace context (and baggage, which a delivery of our own trace has none of).
    headers["traceparent"] = span.traceparent()
    state = span.tracestate()
    if state is not None:
        headers["tracestate"] = state


def carried_unsampled(message: Outgoing) -> bool:
    """For a delivery the sampler dropped: its ids into `message`, unsampled, and True.

    Such a delivery is stored as without tracing: no span, no context.
    """
    unsampled = dropped.get()
    if unsampled is None:
        return False
    headers = message.properties.headers
    if headers is None:
        headers = message.properties.headers = {}
    headers["traceparent"] = unsampled
    return True


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
            attributes=_messaging(message),
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
    unsampled = dropped.get()
    if unsampled is not None:
        return ids(unsampled)
    span = recording.get()
    context = (span or trace.get_current_span()).get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
