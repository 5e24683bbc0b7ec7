"""A delivery's sampling, decided without the sampler, is the SDK sampler's own answer."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind

from service.observability import sampling

NAME = "POST /webhooks/avionte"


def provider_with(sampler: Sampler) -> TracerProvider:
    return TracerProvider(sampler=sampler, id_generator=sampling.ChosenIds())


@pytest.fixture
def seeded() -> Iterator[None]:
    state = random.getstate()
    yield
    random.setstate(state)


def the_sdk_answer(tracer: Any, trace_id: int) -> bool:
    result = tracer.sampler.should_sample(None, trace_id, NAME, SpanKind.SERVER)
    return bool(result.decision.is_sampled())


@settings(max_examples=40, deadline=None)
@given(
    rate=st.floats(min_value=0.0, max_value=1.0),
    parent_based=st.booleans(),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_a_ratio_decides_as_the_sdk_for_every_trace_id(
    rate: float, parent_based: bool, seed: int
) -> None:
    sampler = ParentBasedTraceIdRatio(rate) if parent_based else TraceIdRatioBased(rate)
    provider = provider_with(sampler)
    tracer = provider.get_tracer("sampling-test")
    decide = sampling.decider(tracer)
    random.seed(seed)
    verdicts = [decide(NAME) for _ in range(200)]
    for verdict in verdicts:
        assert isinstance(verdict, sampling.Kept | str)
        if isinstance(verdict, sampling.Kept):
            trace_id, kept = verdict.trace_id, True
        else:
            trace_id, kept = int(sampling.ids(verdict)[0], 16), False
        assert trace_id != 0
        assert kept == the_sdk_answer(tracer, trace_id)
    provider.shutdown()


@pytest.mark.parametrize(
    ("sampler", "sampled"),
    [(ALWAYS_ON, True), (DEFAULT_ON, True), (ALWAYS_OFF, False), (DEFAULT_OFF, False)],
)
def test_always_and_never_decide_without_asking(sampler: Sampler, sampled: bool) -> None:
    provider = provider_with(sampler)
    decide = sampling.decider(provider.get_tracer("sampling-test"))
    verdicts = [decide(NAME) for _ in range(50)]
    assert all(isinstance(v, sampling.Kept) == sampled for v in verdicts)
    provider.shutdown()


@pytest.mark.parametrize(("rate", "kind"), [(1.0, sampling.Kept), (0.0, str)])
def test_a_delivery_gets_what_asking_the_sampler_gives(
    seeded: None, rate: float, kind: type
) -> None:
    provider = provider_with(ParentBasedTraceIdRatio(rate))
    tracer = provider.get_tracer("sampling-test")
    random.seed(7)
    fast = sampling.decider(tracer)(NAME)
    random.seed(7)
    asked = sampling.decide(tracer, NAME)
    assert isinstance(fast, kind)
    assert fast == asked
    if isinstance(fast, str):
        assert fast.endswith("-02")  # a random trace id, not sampled
        assert sampling.ids(fast) == tuple(fast.split("-")[1:3])
    provider.shutdown()


class Counting(Sampler):
    """A sampler of a user's own: it must be asked for every delivery."""

    def __init__(self) -> None:
        self.asked = 0

    def should_sample(self, *args: Any, **kwargs: Any) -> Any:
        self.asked += 1
        return ALWAYS_ON.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return "Counting"


@pytest.mark.parametrize("wrapped", [False, True])
def test_any_other_sampler_is_asked_each_time(wrapped: bool) -> None:
    counting = Counting()
    provider = provider_with(ParentBased(counting) if wrapped else counting)
    decide = sampling.decider(provider.get_tracer("sampling-test"))
    for _ in range(5):
        assert isinstance(decide(NAME), sampling.Kept)
    assert counting.asked == 5
    provider.shutdown()


def test_the_sdk_still_names_a_parent_based_samplers_root_as_this_module_reads_it() -> None:
    # The private attribute `_root_bound` reads: an SDK upgrade that renames it fails here.
    root = ParentBasedTraceIdRatio(0.25)._root
    assert isinstance(root, TraceIdRatioBased)
    assert root.bound == TraceIdRatioBased(0.25).bound
    assert DEFAULT_ON._root is ALWAYS_ON


def test_the_deployed_sampler_is_not_called_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    sampler = ParentBasedTraceIdRatio(0.5)

    def asked(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the sampler was asked")

    monkeypatch.setattr(sampler, "should_sample", asked)
    monkeypatch.setattr(sampler._root, "should_sample", asked)
    provider = provider_with(sampler)
    decide = sampling.decider(provider.get_tracer("sampling-test"))
    verdicts = [decide(NAME) for _ in range(400)]
    kept = sum(isinstance(v, sampling.Kept) for v in verdicts)
    assert 120 < kept < 280  # one in two, give or take
    provider.shutdown()


@given(
    trace_id=st.integers(1, 2**128 - 1),
    span_id=st.integers(1, 2**64 - 1),
    flags=st.integers(0, 255),
)
def test_traceparent_is_the_w3c_text_of_the_ids(trace_id: int, span_id: int, flags: int) -> None:
    header = sampling.traceparent(trace_id, span_id, flags)
    version, trace, span, flag = header.split("-")
    assert (version, len(trace), len(span), len(flag)) == ("00", 32, 16, 2)
    assert (int(trace, 16), int(span, 16), int(flag, 16)) == (trace_id, span_id, flags)
    assert header == header.lower()


@pytest.mark.parametrize(("drawn", "redrawn"), [(1 << 128, 5), (7, 9), (0, 5)])
def test_a_dropped_delivery_never_gets_a_zero_id(
    seeded: None, monkeypatch: pytest.MonkeyPatch, drawn: int, redrawn: int
) -> None:
    provider = provider_with(TraceIdRatioBased(0.0))
    draws = iter([drawn, redrawn, redrawn])
    monkeypatch.setattr(random, "getrandbits", lambda bits: next(draws))
    header = sampling.decider(provider.get_tracer("sampling-test"))(NAME)
    assert isinstance(header, str)
    _, trace, span, _ = header.split("-")
    assert int(trace, 16) != 0
    assert int(span, 16) != 0
    provider.shutdown()
