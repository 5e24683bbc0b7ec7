"""The exporter process: spans from a traced process's pipe to the SDK's OTLP exporter.

Started by `service.observability.handoff`, never by hand. It reads its standard
input until the end, rebuilds each span, and hands it to the SDK's batch processor
with the exporter the standard variables configure. It ignores SIGINT and SIGTERM:
a signal meant for the process group reaches it too, and it stops only when its
traced process closes the pipe, after exporting what it holds.
"""

from __future__ import annotations

import marshal
import os
import signal
import sys
from typing import Any, BinaryIO

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

from service.observability.handoff import LENGTH
from service.observability.logs import configure_logging
from service.observability.resource import SettledResource
from service.observability.tracing import otlp_exporter


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


def rebuild(record: tuple[Any, ...], resource: SettledResource) -> ReadableSpan:
    """The span `handoff.compact` made `record` of."""
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
    return Rebuilt(
        (dropped[0], dropped[1], dropped[2]),
        name=name,
        context=SpanContext(trace_id, span_id, False, TraceFlags(flags), TraceState(state)),
        parent=None if parent is None else SpanContext(parent[0], parent[1], parent[2]),
        resource=resource,
        attributes=attributes,
        events=[Event(event, attrs, timestamp) for event, timestamp, attrs in events],
        links=[
            Link(SpanContext(t, s, remote, TraceFlags(f), TraceState(ts)), attrs)
            for t, s, f, remote, ts, attrs in links
        ],
        kind=SpanKind(kind),
        status=Status(StatusCode(code), description),
        start_time=start,
        end_time=end,
        instrumentation_scope=None if scope is None else InstrumentationScope(*scope),
    )


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


def main(stream: BinaryIO) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    opening = read_frame(stream)
    if opening is None:
        return 0
    configure_logging(opening["level"], opening["format"], redact=opening["secrets"])
    resource = SettledResource(opening["resource"], opening["schema_url"])
    processor = BatchSpanProcessor(otlp_exporter(os.environ))
    try:
        while (batch := read_frame(stream)) is not None:
            for record in batch:
                processor.on_end(rebuild(record, resource))
    finally:
        processor.shutdown()  # type: ignore[no-untyped-call]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.stdin.buffer))
