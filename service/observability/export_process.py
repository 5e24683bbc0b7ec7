"""The exporter process: spans from a traced process's pipe to the SDK's OTLP exporter.

Started by `service.observability.handoff`, never by hand. It reads its standard
input until the end, rebuilds each span, and hands it to the SDK's batch processor
with the exporter the standard variables configure. It ignores SIGINT and SIGTERM:
a signal meant for the process group reaches it too, and it stops only when its
traced process closes the pipe, after exporting what it holds.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import signal
import sys
from typing import Any, BinaryIO

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

from service.observability.handoff import LENGTH
from service.observability.logs import configure_logging
from service.observability.resource import SettledResource
from service.observability.tracing import otlp_exporter
from service.shared.heap import settle

# Below the traced process: when CPU is short, deliveries come first and spans wait.
# Where the system allows it, the process runs only on CPU time nothing else wants
# (`idle`); the niceness is what is left where it does not.
NICENESS = 10


class Rebuilt(ReadableSpan):
    """A span read from the pipe, with the counts of what its process dropped."""

    def __init__(self, dropped: tuple[int, int, int], **fields: Any) -> None:
        super().__init__(**fields)
        self._dropped = dropped

    @property
    def dropped_attributes(self) -> int:
        return self._dropped[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped[2]


def rebuild(record: tuple[Any, ...], resource: SettledResource, limits: SpanLimits) -> ReadableSpan:
    """The span `handoff.compact` (or `recorded.RecordedSpan`) made `record` of.

    Attributes, events and links are bounded and validated here by the SDK's rules and
    `limits`, as the SDK's span would have done as they were set: a recorded span
    leaves that to this process.
    """
    (
        name,
        trace_id,
        span_id,
        flags,
        state,
        parent,
        kind,
        start,
        end,
        attributes,
        events,
        links,
        code,
        description,
        scope,
        *dropped,
    ) = record
    bounded = span_attributes(attributes, limits)
    kept_events = _last(events, limits.max_events)
    kept_links = _last(links, limits.max_links)
    return Rebuilt(
        (
            dropped[0] + bounded.dropped,
            dropped[1] + len(events) - len(kept_events),
            dropped[2] + len(links) - len(kept_links),
        ),
        name=name,
        context=SpanContext(trace_id, span_id, False, _flags(flags), _state(state)),
        parent=None if parent is None else SpanContext(parent[0], parent[1], parent[2]),
        resource=resource,
        attributes=bounded,
        events=[
            Event(event, _bounded(attrs, gone, limits.max_event_attributes, limits), timestamp)
            for event, timestamp, attrs, gone in kept_events
        ]
        if kept_events
        else [],
        links=[
            Link(
                SpanContext(t, s, remote, _flags(f), _state(ts)),
                _bounded(attrs, gone, limits.max_link_attributes, limits),
            )
            for t, s, f, remote, ts, attrs, gone in kept_links
        ]
        if kept_links
        else [],
        kind=_KINDS[kind],
        status=_status(code, description),
        start_time=start,
        end_time=end,
        instrumentation_scope=_scope(scope),
    )


# The API's flags, kinds, empty trace state and plain statuses are immutable: one of
# each serves every span (an enum's or an int subclass's call costs a span about 1 µs).
_KINDS = {kind.value: kind for kind in SpanKind}
_FLAGS = [TraceFlags(value) for value in range(256)]
_NO_STATE = TraceState()
_STATUSES = {code.value: Status(code) for code in StatusCode}


def _flags(value: int) -> TraceFlags:
    return _FLAGS[value] if 0 <= value < 256 else TraceFlags(value)


def _state(pairs: tuple[tuple[str, str], ...]) -> TraceState:
    return TraceState(pairs) if pairs else _NO_STATE


def _status(code: int, description: str | None) -> Status:
    if description is None:
        return _STATUSES[code]
    return Status(StatusCode(code), description)


# Attribute values the SDK keeps as they are (a marshalled value is of its exact type).
_PLAIN = frozenset((str, bool, int, float, bytes, type(None)))
_TEXT = frozenset((str,))


class _Kept(dict[str, Any]):
    """Attributes the SDK's rules would keep whole: none dropped."""

    dropped = 0


def span_attributes(attributes: dict[str, Any], limits: SpanLimits) -> Any:
    """A span's attributes bounded and validated by the SDK's rules.

    Most spans' attributes are within the limits and plain, which the SDK keeps
    unchanged: those are checked here, at about half of what `BoundedAttributes` takes.
    """
    most, longest = limits.max_span_attributes, limits.max_span_attribute_length
    # Type checks over the whole map at once, in C: a frame's values are of exact types.
    if (
        (most is None or len(attributes) <= most)
        and _PLAIN.issuperset(map(type, attributes.values()))
        and _TEXT.issuperset(map(type, attributes))
        and "" not in attributes
        and (
            longest is None
            or all(len(value) <= longest for value in attributes.values() if type(value) is str)
        )
    ):
        return _Kept(attributes)
    return BoundedAttributes(most, attributes, immutable=True, max_value_len=longest)


_SCOPES: dict[tuple[str, str | None, str | None], InstrumentationScope] = {}


def _scope(fields: tuple[Any, ...] | None) -> InstrumentationScope | None:
    # One object a scope: the encoder groups spans by scope, comparing them as it goes.
    if fields is None:
        return None
    if fields[3]:
        return InstrumentationScope(*fields)
    key = (fields[0], fields[1], fields[2])
    scope = _SCOPES.get(key)
    if scope is None:
        scope = _SCOPES[key] = InstrumentationScope(*fields)
    return scope


def _last(items: tuple[Any, ...], limit: int | None) -> tuple[Any, ...]:
    # The SDK keeps the newest events and links past its limit.
    return items if limit is None or len(items) <= limit else items[len(items) - limit :]


def _bounded(attributes: dict[str, Any], gone: int, limit: int | None, limits: SpanLimits) -> Any:
    """An event's or a link's attributes, with those its process dropped counted too."""
    bounded = BoundedAttributes(
        limit, attributes, immutable=True, max_value_len=limits.max_attribute_length
    )
    bounded.dropped += gone
    return bounded


def read_frame(stream: BinaryIO) -> Any:
    """The next value on `stream`, or None at its end (a cut-off frame counts as the end)."""
    head = stream.read(LENGTH.size)
    if len(head) < LENGTH.size:
        return None
    (size,) = LENGTH.unpack(head)
    body = stream.read(size)
    if len(body) < size:
        return None
    # The pipe comes only from the process that started this one.
    return marshal.loads(body)  # noqa: S302


def idle() -> None:
    """Run this process, and the threads it starts later, only on otherwise idle CPU time.

    On two shared cores its encoding took time from the broker and the load the traced
    process waits on. Linux lets any process lower its own policy to `SCHED_IDLE`;
    elsewhere, or where a sandbox refuses it, the niceness stays.
    """
    policy = getattr(os, "SCHED_IDLE", None)
    if policy is not None:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, os.sched_param(0))


def main(stream: BinaryIO) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(NICENESS)
    idle()
    opening = read_frame(stream)
    if opening is None:
        return 0
    configure_logging(opening["level"], opening["format"], redact=opening["secrets"])
    resource = SettledResource(opening["resource"], opening["schema_url"])
    processor = BatchSpanProcessor(otlp_exporter(os.environ))
    limits = SpanLimits()
    # Like the receiver's: each span leaves a few dozen objects for reference counting
    # to free, and young collections every 700 of them cost the process about 7 %.
    settle()
    try:
        while (batch := read_frame(stream)) is not None:
            for record in batch:
                processor.on_end(rebuild(record, resource, limits))
    finally:
        processor.shutdown()  # type: ignore[no-untyped-call]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.stdin.buffer))
