"""A recorded span reaches the collector exactly as the SDK's span would have.

The same calls, made on an SDK span and on a `RecordedSpan` with the same ids and times,
are sent through the pipe's form and rebuilt as the exporter process does, with the
same span limits; the OTLP bytes must be equal. Invalid attributes included: the SDK
drops them as they are set, the exporter process when it rebuilds.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import (
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service.observability import sampling, spans, tracing
from service.observability.export_process import read_frame, rebuild, span_attributes
from service.observability.handoff import compact, frame
from service.observability.recorded import RecordedSpan
from service.observability.resource import SettledResource
from tests.service.observability.test_handoff import scalars

RESOURCE = SettledResource({"service.name": "recorded-test"})
# The SDK's default propagators (OTEL_PROPAGATORS unset).
W3C = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
NAME = "POST /webhooks/avionte"
START = 1_700_000_000_000_000_000


def exported(records: list[tuple[Any, ...]], limits: SpanLimits) -> ExportTraceServiceRequest:
    """What the exporter process sends for `records`."""
    batch = read_frame(BytesIO(frame(records)))
    spans: list[ReadableSpan] = [rebuild(record, RESOURCE, limits) for record in batch]
    request: ExportTraceServiceRequest = encode_spans(spans)
    return request


def dropped_apart(request: ExportTraceServiceRequest) -> tuple[bytes, int]:
    """The request's bytes without its span's count of dropped attributes, and that count."""
    [span] = request.resource_spans[0].scope_spans[0].spans
    dropped = span.dropped_attributes_count
    span.dropped_attributes_count = 0
    return request.SerializeToString(), dropped


class Both:
    """An SDK span and a recorded span, started alike, told the same things."""

    def __init__(self, limits: SpanLimits, attributes: dict[str, Any]) -> None:
        self.limits = limits
        self.finished = InMemorySpanExporter()
        self.provider = TracerProvider(
            resource=RESOURCE,
            sampler=ALWAYS_ON,
            id_generator=sampling.ChosenIds(),
            span_limits=limits,
        )
        self.provider.add_span_processor(SimpleSpanProcessor(self.finished))
        tracer = self.provider.get_tracer(tracing.TRACER_NAME, schema_url=tracing.SCHEMA_URL)
        kept = sampling.decide(tracer, NAME)
        assert isinstance(kept, sampling.Kept)
        assert kept.sampled
        with sampling.chosen(kept.trace_id):
            self.sdk = tracer.start_span(
                NAME, kind=SpanKind.SERVER, attributes=attributes, start_time=START
            )
        ids = SpanContext(
            kept.trace_id,
            self.sdk.get_span_context().span_id,
            is_remote=False,
            trace_flags=TraceFlags(kept.flags),
            trace_state=kept.trace_state,
        )
        self.records: list[tuple[Any, ...]] = []
        self.recorded = RecordedSpan(
            NAME,
            ids,
            hand=self.records.append,
            scope=tracing.SCOPE,
            kind=SpanKind.SERVER,
            attributes={**kept.attributes, **attributes},
            start_time=START,
        )

    def do(self, call: str, *args: Any) -> None:
        getattr(self.sdk, call)(*args)
        getattr(self.recorded, call)(*args)

    def compare(self) -> None:
        [sdk_span] = self.finished.get_finished_spans()
        assert len(self.records) == 1
        ours = exported(self.records, self.limits)
        sdk = exported([compact(sdk_span)], self.limits)
        if self.limits.max_span_attributes is None:
            assert ours.SerializeToString() == sdk.SerializeToString()
        else:
            # Past the limit, the same attributes are kept; but the SDK counts a key it
            # dropped and was given again as dropped twice, and this process once.
            (ours_bytes, ours_dropped), (sdk_bytes, sdk_dropped) = map(dropped_apart, (ours, sdk))
            assert ours_bytes == sdk_bytes
            assert 0 < ours_dropped <= sdk_dropped or ours_dropped == sdk_dropped == 0
        assert self.recorded.get_span_context() == sdk_span.get_span_context()


@pytest.fixture
def both() -> Iterator[Both]:
    made = Both(SpanLimits(), {"http.request.method": "POST", "url.scheme": "http"})
    yield made
    made.provider.shutdown()


def test_a_delivery_span_with_an_error_and_a_link_is_exported_alike(both: Both) -> None:
    both.do("set_attributes", {"messaging.system": "rabbitmq", "relay.stored": "spool"})
    both.do("set_attribute", "http.response.status_code", 503)
    both.do("record_exception", ValueError("nothing stored"), {"extra": 1}, START + 10)
    both.do("add_event", "retried", {"attempt": 2}, START + 20)
    linked = SpanContext(0x1234, 0x5678, is_remote=True, trace_state=TraceState([("a", "b")]))
    both.do("add_link", linked, {"link.kind": "follows"})
    both.do("set_status", Status(StatusCode.ERROR, "ValueError"))
    both.do("update_name", "POST /elsewhere")
    both.do("end", START + 1_000)
    both.compare()
    # Ended, both ignore anything more, and a second end hands nothing over again.
    both.recorded.set_attribute("late", 1)
    both.recorded.end(START + 2_000)
    assert len(both.records) == 1
    assert "late" not in both.records[0][9]
    assert not both.recorded.is_recording()


def test_status_ok_is_final_and_unset_changes_nothing(both: Both) -> None:
    both.do("set_status", StatusCode.ERROR, "first")
    both.do("set_status", StatusCode.UNSET)
    both.do("set_status", StatusCode.OK)
    both.do("set_status", Status(StatusCode.ERROR, "after ok"))
    both.do("end", START + 5)
    both.compare()
    assert both.records[0][12] == StatusCode.OK.value


class Opaque:
    """An attribute value the SDK does not take: it becomes None."""


values = st.one_of(
    scalars,
    st.none(),
    st.just(Opaque()),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.lists(st.one_of(st.text(max_size=4), st.none()), max_size=3).map(tuple),
    st.lists(st.integers(min_value=0, max_value=2**40), max_size=3),
    st.lists(st.one_of(st.integers(), st.text(max_size=2)), min_size=2, max_size=3).map(tuple),
)
attribute_maps = st.dictionaries(st.text(max_size=10), values, max_size=8)
# Set later, a key the SDK refuses (empty) counts as dropped at each attempt there, and
# once here: the relay never sets one.
keys = st.text(min_size=1, max_size=3)
later_maps = st.dictionaries(keys, values, max_size=4)
calls = st.one_of(
    st.tuples(st.just("set_attribute"), keys, values),
    st.tuples(st.just("set_attributes"), later_maps),
    st.tuples(
        st.just("add_event"), st.text(max_size=6), attribute_maps, st.integers(START, START + 99)
    ),
    st.tuples(
        st.just("set_status"),
        st.sampled_from([StatusCode.ERROR, StatusCode.OK, StatusCode.UNSET]),
        st.one_of(st.none(), st.text(max_size=6)),
    ),
    st.tuples(st.just("update_name"), st.text(max_size=6)),
)
limits = st.builds(
    SpanLimits,
    max_span_attributes=st.sampled_from([None, 2, 5]),
    max_event_attributes=st.sampled_from([None, 1]),
    max_events=st.sampled_from([None, 1, 2]),
    max_attribute_length=st.sampled_from([None, 3]),
    max_span_attribute_length=st.sampled_from([None, 4]),
)


@settings(max_examples=80, deadline=None)
@given(limits=limits, attributes=attribute_maps, made=st.lists(calls, max_size=8))
def test_any_calls_are_exported_as_the_sdk_would(
    limits: SpanLimits, attributes: dict[str, Any], made: list[tuple[Any, ...]]
) -> None:
    both = Both(limits, attributes)
    try:
        for call, *args in made:
            both.do(call, *args)
        both.do("end", START + 100)
        both.compare()
    finally:
        both.provider.shutdown()


@pytest.mark.parametrize("state", [[], [("vendor", "value"), ("other", "x")]])
def test_a_recorded_span_is_carried_as_the_w3c_propagators_write_it(
    both: Both, state: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing, "_w3c", [True])
    ids = both.recorded.get_span_context()
    span = RecordedSpan(
        NAME,
        SpanContext(ids.trace_id, ids.span_id, False, ids.trace_flags, TraceState(state)),
        hand=both.records.append,
        scope=tracing.SCOPE,
    )
    carried: dict[str, Any] = {}
    spans._carry(span, carried)
    injected: dict[str, Any] = {}
    W3C.inject(injected, context=set_span_in_context(span))
    assert carried == injected
    assert carried["traceparent"].startswith(f"00-{ids.trace_id:032x}-")


@pytest.mark.parametrize(
    ("value", "w3c"),
    [
        ("", True),
        ("tracecontext,baggage", True),
        (" Baggage , tracecontext ", True),
        ("tracecontext", True),
        ("baggage", False),
        ("b3", False),
        ("tracecontext,b3", False),
        ("none", False),
    ],
)
def test_only_w3c_propagators_are_written_directly(value: str, w3c: bool) -> None:
    assert tracing._w3c_only({"OTEL_PROPAGATORS": value}) is w3c


@settings(max_examples=200, deadline=None)
@given(limits=limits, attributes=attribute_maps)
def test_a_span_s_attributes_are_kept_as_bounded_attributes_keeps_them(
    limits: SpanLimits, attributes: dict[str, Any]
) -> None:
    attributes = read_frame(BytesIO(frame(attributes)))  # as they come down the pipe
    ours = span_attributes(attributes, limits)
    sdk = BoundedAttributes(
        limits.max_span_attributes,
        attributes,
        immutable=True,
        max_value_len=limits.max_span_attribute_length,
    )
    assert list(ours.items()) == list(sdk.items())
    assert ours.dropped == sdk.dropped


def test_plain_attributes_within_the_limits_are_kept_as_they_came() -> None:
    attributes = {"http.request.method": "POST", "http.response.status_code": 200, "ok": True}
    kept = span_attributes(attributes, SpanLimits())
    assert not isinstance(kept, BoundedAttributes)
    assert (dict(kept), kept.dropped) == (attributes, 0)
    too_long = span_attributes({"url.path": "/webhooks"}, SpanLimits(max_span_attribute_length=4))
    assert isinstance(too_long, BoundedAttributes)
    assert dict(too_long) == {"url.path": "/web"}
