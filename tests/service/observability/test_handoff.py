"""Spans handed to the exporter process arrive as the SDK would have exported them.

The round trip is checked on the OTLP bytes themselves: a span the SDK made, encoded by
the SDK's own encoder, against the same span passed through the pipe's form and rebuilt.
The process itself is checked against a collector served by the test: what it gets,
what survives the exporter process's death, signals and shutdown.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from service.observability import handoff
from service.observability.export_process import NICENESS, read_frame, rebuild
from service.observability.handoff import SpanHandoff, compact, frame
from service.observability.resource import SettledResource
from service.shared.errors import SettingsError
from tests.collector import Collector

RESOURCE = SettledResource({"service.name": "handoff-test", "deployment.environment": "test"})
LOGGING = {"level": "info", "format": "json", "secrets": []}


class Label(str):
    """A str subclass, as a library may hand over for an attribute value."""


@pytest.fixture
def made() -> Iterator[tuple[Any, InMemorySpanExporter]]:
    exported = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exported))
    yield (
        provider.get_tracer("handoff-test", "1.2.3", schema_url="https://example.test/s"),
        exported,
    )
    provider.shutdown()


def through_the_pipe(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    """`spans` as the exporter process reads them back."""
    batch = read_frame(BytesIO(frame([compact(span) for span in spans])))
    resource = SettledResource(RESOURCE.attributes, RESOURCE.schema_url)
    return [rebuild(record, resource, SpanLimits()) for record in batch]


def same_otlp(spans: tuple[ReadableSpan, ...]) -> None:
    assert spans
    rebuilt = through_the_pipe(spans)
    assert encode_spans(rebuilt).SerializeToString() == encode_spans(spans).SerializeToString()


def test_a_span_with_everything_comes_back_byte_for_byte(
    made: tuple[Any, InMemorySpanExporter],
) -> None:
    tracer, exported = made
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "value")]),
    )
    linked = SpanContext(0x1234, 0x5678, is_remote=True, trace_state=TraceState([("a", "b")]))
    span = tracer.start_span(
        "POST /webhooks/avionte",
        context=set_span_in_context(tracer.start_span("parent")),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": "POST", "label": Label("subclass")},
        links=[Link(linked, {"link.kind": "follows", "n": 3})],
    )
    span.set_attributes({"flag": True, "ratio": 0.25, "codes": (200, 503), "names": ("a", "b")})
    span.record_exception(ValueError("nothing stored"))
    span.add_event("retried", {"attempt": 2})
    span.set_status(Status(StatusCode.ERROR, "ValueError"))
    span.end()
    child = tracer.start_span(
        "from a sender", context=set_span_in_context(NonRecordingSpan(remote)), kind=SpanKind.CLIENT
    )
    child.end()
    same_otlp(exported.get_finished_spans())


scalars = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
values = st.one_of(
    scalars,
    st.lists(st.text(max_size=5), max_size=3).map(tuple),
    st.lists(st.integers(min_value=0, max_value=2**40), max_size=3).map(tuple),
)


@settings(max_examples=60, deadline=None)
@given(attributes=st.dictionaries(st.text(min_size=1, max_size=12), values, max_size=12))
def test_any_attributes_come_back_byte_for_byte(attributes: dict[str, Any]) -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exported))
    try:
        span = provider.get_tracer("handoff-test").start_span("generated", attributes=attributes)
        span.add_event("event", attributes)
        span.end()
        same_otlp(exported.get_finished_spans())
    finally:
        provider.shutdown()


@pytest.fixture
def environ(collector: Collector) -> dict[str, str]:
    return {**os.environ, **collector.env("handoff-test")}


def traced(processor: SpanHandoff) -> Any:
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(processor)
    return provider.get_tracer("handoff-test")


def end_spans(tracer: Any, prefix: str, count: int) -> None:
    for n in range(count):
        tracer.start_span(f"{prefix}-{n}").end()


def names(collector: Collector, prefix: str) -> set[str]:
    return {span.name for span in collector.spans if span.name.startswith(prefix)}


async def test_spans_reach_the_collector_and_shutdown_exports_the_last(
    collector: Collector, environ: dict[str, str]
) -> None:
    processor = SpanHandoff(RESOURCE, environ, LOGGING)
    tracer = traced(processor)
    end_spans(tracer, "early", 20)
    await collector.until(lambda spans: len(names(collector, "early")) == 20)
    # It yields the CPU to the traced process when both want it.
    assert os.getpriority(os.PRIO_PROCESS, processor._child.pid) == os.getpriority(
        os.PRIO_PROCESS, 0
    ) + min(NICENESS, 19 - os.getpriority(os.PRIO_PROCESS, 0))
    # And on Linux it runs only on CPU time nothing else wants.
    assert os.sched_getscheduler(processor._child.pid) == os.SCHED_IDLE
    end_spans(tracer, "last", 30)
    child = processor._child
    await asyncio.to_thread(processor.shutdown)
    assert child.returncode == 0
    assert names(collector, "last") == {f"last-{n}" for n in range(30)}
    assert {span.service for span in collector.spans} == {"handoff-test"}


async def test_a_killed_exporter_process_is_replaced_and_signals_do_not_stop_one(
    collector: Collector, environ: dict[str, str]
) -> None:
    processor = SpanHandoff(RESOURCE, environ, LOGGING)
    tracer = traced(processor)
    try:
        first = processor._child
        end_spans(tracer, "before", 5)
        await collector.until(lambda spans: len(names(collector, "before")) == 5)
        # A Ctrl-C or a TERM sent to the whole process group must not cost spans.
        first.send_signal(signal.SIGINT)
        first.send_signal(signal.SIGTERM)
        end_spans(tracer, "after-signals", 5)
        await collector.until(lambda spans: len(names(collector, "after-signals")) == 5)
        assert first.poll() is None
        first.kill()
        await asyncio.to_thread(first.wait)
        # The batch that meets the dead pipe is lost; the ones after it are not.
        async with asyncio.timeout(20):
            while processor._child is first:
                end_spans(tracer, "lost", 1)
                await asyncio.sleep(0.1)
        end_spans(tracer, "replaced", 5)
        await collector.until(lambda spans: len(names(collector, "replaced")) == 5)
    finally:
        await asyncio.to_thread(processor.shutdown)


async def test_a_full_batch_goes_at_once_without_waiting_out_the_gathering(
    collector: Collector, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handoff, "GATHER_SECONDS", 60.0)
    monkeypatch.setattr(handoff, "BATCH", 10)
    processor = SpanHandoff(RESOURCE, environ, LOGGING)
    tracer = traced(processor)
    try:
        end_spans(tracer, "few", 9)
        end_spans(tracer, "tenth", 1)
        await collector.until(lambda spans: len(names(collector, "few")) == 9, within=10)
        assert names(collector, "tenth") == {"tenth-0"}
        # Fewer than a batch wait for the gathering to end, here for good.
        end_spans(tracer, "alone", 3)
        await asyncio.sleep(1.0)
        assert not names(collector, "alone")
    finally:
        await asyncio.to_thread(processor.shutdown)
    assert names(collector, "alone") == {f"alone-{n}" for n in range(3)}


async def test_spans_past_the_queue_limit_are_dropped_and_counted(
    collector: Collector, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handoff, "GATHER_SECONDS", 1.0)
    processor = SpanHandoff(
        RESOURCE,
        {**environ, "OTEL_BSP_MAX_QUEUE_SIZE": "5", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "5"},
        LOGGING,
    )
    tracer = traced(processor)
    try:
        end_spans(tracer, "burst", 12)
        assert processor.dropped == 7
        await collector.until(lambda spans: len(names(collector, "burst")) == 5)
        assert names(collector, "burst") == {f"burst-{n}" for n in range(5)}
    finally:
        await asyncio.to_thread(processor.shutdown)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "100"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        ({"OTEL_BSP_SCHEDULE_DELAY": "0"}, "OTEL_BSP_SCHEDULE_DELAY"),
    ],
)
def test_batching_the_exporter_process_would_refuse_fails_at_start(
    settings: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=f"^{named}: "):
        SpanHandoff(
            RESOURCE, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", **settings}, LOGGING
        )


async def test_the_exporter_process_ends_when_its_traced_process_is_killed(
    environ: dict[str, str], collector: Collector
) -> None:
    program = (
        "import sys, time\n"
        "from service.observability.handoff import SpanHandoff\n"
        "from tests.service.observability.test_handoff import LOGGING, RESOURCE, traced\n"
        "processor = SpanHandoff(RESOURCE, dict(__import__('os').environ), LOGGING)\n"
        "traced(processor).start_span('from-the-killed').end()\n"
        "print(processor._child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    traced_process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", program, env=environ, stdout=asyncio.subprocess.PIPE
    )
    assert traced_process.stdout is not None
    exporter = int(await traced_process.stdout.readline())
    await collector.until(lambda spans: bool(names(collector, "from-the-killed")))
    traced_process.kill()
    await traced_process.wait()
    async with asyncio.timeout(20):
        while not ended(exporter):
            await asyncio.sleep(0.05)


def ended(pid: int) -> bool:
    """Whether `pid` is gone, or a zombie that only waits for its new parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
