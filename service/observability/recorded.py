"""The receiver's own sampled SERVER span, recorded as plain values, not as an SDK span.

The SDK's span validates every attribute as it is set, under a lock, and ends by
copying itself for its processors: about 50 µs of the event loop's time a sampled
delivery, before anything is encoded. This span only records what it is told, through
the OpenTelemetry API's `Span` interface, and on `end` hands the same plain values
`handoff.compact` makes of an SDK span to the exporter process, which validates and
bounds the attributes with the SDK's own rules (`export_process.rebuild`) before the
SDK's batch processor and exporter take it.

It is used only where nothing else needs an SDK span: a root span the receiver starts
itself, sampled by the SDK's sampler (`sampling.decide`), with the OTLP exporter as the
only one (`tracing.recorder`). Child spans (a spool write) are the SDK's, parented by
this one's context as usual.

What reaches the collector is what the SDK's span would have sent, attribute for
attribute (`tests/service/observability/test_recorded.py`), with one difference past
the attribute limit: a key dropped and then set again counts once as dropped here,
twice in the SDK.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.trace import Link, Span, SpanContext, SpanKind
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util import types

from service.observability.handoff import identity, links_of
from service.observability.sampling import traceparent

Hand = Callable[[tuple[Any, ...]], None]
# A new span's status: immutable, so one serves every span.
_UNSET = Status(StatusCode.UNSET)


class RecordedSpan(Span):
    """A recording span whose `end` hands its values to `hand`."""

    def __init__(
        self,
        name: str,
        context: SpanContext,
        *,
        hand: Hand,
        scope: tuple[str, str | None, str | None, dict[str, Any]],
        kind: SpanKind = SpanKind.INTERNAL,
        parent: SpanContext | None = None,
        attributes: types.Attributes = None,
        start_time: int | None = None,
    ) -> None:
        self._name = name
        self._context = context
        # Its ids as plain values, read once: the record and the message's header use them.
        self._identity = identity(context, parent)
        self._hand = hand
        self._scope = scope
        self._kind_value = kind._value_
        self._attributes: dict[str, Any] = dict(attributes) if attributes else {}
        self._events: list[tuple[str, int, dict[str, Any], int]] = []
        self._links: list[Link] = []
        self._status = _UNSET
        self._start = start_time if start_time is not None else time.time_ns()
        self._end: int | None = None

    def __repr__(self) -> str:
        return f"RecordedSpan(name={self._name!r}, context={self._context!r})"

    def get_span_context(self) -> SpanContext:
        return self._context

    def traceparent(self) -> str:
        """This span's W3C `traceparent` header."""
        trace_id, span_id, flags = self._identity[:3]
        return traceparent(trace_id, span_id, flags)

    def tracestate(self) -> str | None:
        """This span's W3C `tracestate` header, or None when its trace state is empty."""
        return self._context.trace_state.to_header() if self._identity[3] else None

    def is_recording(self) -> bool:
        return self._end is None

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self._end is None:
            # Set again, a key becomes the newest, as in the SDK: past the attribute
            # limit, the oldest go first.
            self._attributes.pop(key, None)
            self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end is None:
            mine = self._attributes
            if mine.keys().isdisjoint(attributes):
                mine.update(attributes)
                return
            for key, value in attributes.items():
                mine.pop(key, None)
                mine[key] = value

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end is None:
            moment = timestamp if timestamp is not None else time.time_ns()
            self._events.append((name, moment, dict(attributes or {}), 0))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self._end is not None:
            return
        # As the SDK: a link to an invalid context with nothing else to say is ignored.
        if context.is_valid or attributes or context.trace_state:
            self._links.append(Link(context, attributes))

    def update_name(self, name: str) -> None:
        if self._end is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # The SDK's rules: OK is final, and UNSET never overrides anything.
        if self._end is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An `exception` event with the attributes the SDK gives one."""
        kind, module = type(exception), type(exception).__module__
        name = (
            kind.__qualname__
            if module in ("builtins", "", None)
            else f"{module}.{kind.__qualname__}"
        )
        recorded: dict[str, Any] = {
            "exception.type": name,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            return
        self._end = end_time if end_time is not None else time.time_ns()
        self._hand(self.record())

    def record(self) -> tuple[Any, ...]:
        """The span as `handoff.compact` lays one out; nothing dropped yet."""
        status = self._status
        code, description = (
            (0, None) if status is _UNSET else (status.status_code._value_, status.description)
        )
        return (
            self._name,
            *self._identity,
            self._kind_value,
            self._start,
            self._end,
            self._attributes,
            tuple(self._events),
            links_of(self._links) if self._links else (),
            code,
            description,
            self._scope,
            0,
            0,
            0,
        )
