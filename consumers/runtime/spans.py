"""A worker's spans, used only while tracing is on (`service.observability.tracing`).

Each handling is a CONSUMER span, a child of the context the message carries in its
`traceparent` header (the receiver's publish, also for a retry, dead or replayed copy,
which keep the header), with messaging's semantic conventions and the outcome. Each
handler runs in a span of its own, which records what it raised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

# Outcomes that mean the handling did not succeed.
FAILED = frozenset({"retried", "dead", "rejected", "requeued"})
_CARRIED = ("traceparent", "tracestate", "baggage")


def _carrier(message: AbstractIncomingMessage) -> dict[str, str]:
    headers = message.headers or {}
    carried = {}
    for name in _CARRIED:
        value = headers.get(name)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            carried[name] = value
    return carried


@contextmanager
def handling(
    tracer: Any,
    queue: str,
    consumer: str,
    message: AbstractIncomingMessage,
    routing_key: str,
    attempt: int,
) -> Iterator[None]:
    """The CONSUMER span of one handling; current while the block runs."""
    attributes = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "process",
        "messaging.operation.name": "consume",
        "messaging.destination.name": queue,
        "messaging.consumer.group.name": consumer,
        "messaging.rabbitmq.destination.routing_key": routing_key,
        "messaging.message.id": message.message_id or "",
        "messaging.message.body.size": len(message.body),
        "relay.consumer": consumer,
        "relay.attempt": attempt,
    }
    with tracer.start_as_current_span(
        f"process {queue}",
        context=propagate.extract(_carrier(message)),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    ):
        yield


def outcome(value: str) -> None:
    """Put the handling's outcome on the current span; a failed one is an error."""
    span = trace.get_current_span()
    span.set_attribute("relay.outcome", value)
    if value in FAILED:
        span.set_status(Status(StatusCode.ERROR, value))


def failed(failure: BaseException) -> None:
    """Record on the current (CONSUMER) span what a handler raised."""
    span = trace.get_current_span()
    span.record_exception(failure)
    span.set_attribute("error.type", type(failure).__name__)


async def call(
    tracer: Any, consumer: str, handler: Callable[[Any], Awaitable[None]], event: Any
) -> None:
    """Run one handler in a span of its own, which records an exception it raises."""
    name = getattr(handler, "__qualname__", type(handler).__name__)
    with tracer.start_as_current_span(
        f"{consumer} {name}", attributes={"code.function.name": name, "relay.consumer": consumer}
    ):
        await handler(event)
