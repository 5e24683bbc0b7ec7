"""A delivery's sampling, decided before anything is built for it.

At the deployed sampling (`parentbased_traceidratio`, 0.1) nine deliveries in ten are
not sampled. For those the receiver makes no span, copies no context and builds no
attribute: it picks the trace id, asks the sampler, and on a "drop" keeps only the
message's `traceparent` (`dropped`; sampled flag off, so that consumers drop it too),
whose ids the log line also carries. A kept delivery's span gets that same trace id
(`ChosenIds`), so the sampler's answer is the SDK's.

Only the receiver's own root spans take this path; a sender's trusted `traceparent`
(`TRACE_SENDER_CONTEXT=authenticated`) goes through the SDK as before.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, NamedTuple

from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, TraceState

# W3C trace flags: sampled, and (level 2) a random trace id.
SAMPLED = 0x01
RANDOM = 0x02


_FLAGS = tuple(f"-{flags:02x}" for flags in range(256))


def traceparent(trace_id: int, span_id: int, flags: int) -> str:
    """The W3C `traceparent` header for these ids (a 128-bit, a 64-bit and an 8-bit one)."""
    # Both ids as one run of bytes in hex: half the time of formatting each.
    ids = ((trace_id << 64) | span_id).to_bytes(24, "big").hex()
    return f"00-{ids[:32]}-{ids[32:]}{_FLAGS[flags]}"


def ids(header: str) -> tuple[str, str]:
    """The trace and span id, in hex, of a `traceparent` this module wrote."""
    return header[3:35], header[36:52]


class Kept(NamedTuple):
    """A delivery the sampler kept: its trace id, and what the sampler gave its span."""

    trace_id: int
    flags: int
    trace_state: TraceState
    attributes: Mapping[str, Any]
    sampled: bool


# A delivery the sampler dropped is only the `traceparent` its message carries: no
# object of its own to build, and nothing to format when it is stored.
dropped: ContextVar[str | None] = ContextVar("relay_dropped_trace", default=None)
# The delivery's recorded span (`recorded`), current without an OpenTelemetry context:
# making and leaving one costs a sampled delivery several calls into the API.
recording: ContextVar[Any] = ContextVar("relay_recording_span", default=None)
_chosen: ContextVar[int] = ContextVar("relay_chosen_trace_id", default=0)


class ChosenIds(RandomIdGenerator):
    """Random ids, except a root span's trace id chosen (and sampled) beforehand."""

    def generate_trace_id(self) -> int:
        return _chosen.get() or super().generate_trace_id()


def decider(tracer: Any) -> Callable[[str], Kept | str | None]:
    """`decide` for `tracer`, answered without asking its sampler where that is the SDK's own.

    The SDK's `parentbased_traceidratio`, `traceidratio`, `parentbased_always_on`,
    `always_on` and their `off` forms decide a new trace from its id alone: sampled when
    its low 64 bits are under a bound. At the deployed one in ten, nine deliveries in ten
    are decided so, by one comparison instead of about twenty calls into the SDK. Any
    other sampler is asked each time (`decide`).
    """
    bound = _root_bound(getattr(tracer, "sampler", None))
    generator = getattr(tracer, "id_generator", None)
    if bound is None or not isinstance(generator, ChosenIds):
        return lambda name: decide(tracer, name)
    flags = RANDOM if generator.is_trace_id_random() else 0
    kept_flags = flags | SAMPLED
    suffix = _FLAGS[flags]
    draw, low = random.getrandbits, TraceIdRatioBased.TRACE_ID_LIMIT

    def by_bound(name: str) -> Kept | str:
        # As `RandomIdGenerator`: 128 random bits for the trace id, then 64 for a dropped
        # delivery's span id (the same bits as two calls), neither of them the invalid 0.
        drawn = draw(192)
        if not (drawn & _TRACE_BITS and drawn >> 128):
            drawn = _valid(drawn)
        if drawn & low < bound:
            return Kept(drawn & _TRACE_BITS, kept_flags, _NO_STATE, _NO_ATTRIBUTES, True)
        # Hex of both ids at once: the span id's 16 digits, then the trace id's 32.
        both = drawn.to_bytes(24, "big").hex()
        return f"00-{both[16:]}-{both[:16]}{suffix}"

    return by_bound


_TRACE_BITS = (1 << 128) - 1


def _valid(drawn: int) -> int:
    """`drawn` with a zero trace or span id drawn again, as the SDK's generator would."""
    trace_id, span_id = drawn & _TRACE_BITS, drawn >> 128
    while not trace_id:
        trace_id = random.getrandbits(128)
    while not span_id:
        span_id = random.getrandbits(64)
    return span_id << 128 | trace_id


_NO_STATE = TraceState()
_NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})


def _root_bound(sampler: Any) -> int | None:
    """The bound a new trace's id is sampled under, for the SDK's own samplers; else None."""
    # A new trace has no parent: ParentBased hands it to its root sampler. `_root` is
    # the SDK's private name for it, checked by `tests/service/observability/test_sampling.py`.
    parent_based = type(sampler) in (ParentBased, ParentBasedTraceIdRatio)
    root = getattr(sampler, "_root", None) if parent_based else sampler
    if type(root) is TraceIdRatioBased:
        return root.bound
    if root is ALWAYS_ON:
        return TraceIdRatioBased.TRACE_ID_LIMIT + 1
    if root is ALWAYS_OFF:
        return 0
    return None


def decide(tracer: Any, name: str) -> Kept | str | None:
    """For a new root SERVER span `name`: choose its trace id and ask the sampler.

    Returns what the span gets when the sampler keeps it (start an SDK span inside
    `chosen`, or a recorded one), the `traceparent` to carry when it drops it, or None
    when this tracer is not the SDK's own (the SDK then decides as usual).
    """
    sampler = getattr(tracer, "sampler", None)
    generator = getattr(tracer, "id_generator", None)
    if sampler is None or not isinstance(generator, ChosenIds):
        return None
    trace_id = generator.generate_trace_id()
    result = sampler.should_sample(None, trace_id, name, SpanKind.SERVER)
    flags = RANDOM if generator.is_trace_id_random() else 0
    decision = result.decision
    if decision.is_recording():
        sampled = decision.is_sampled()
        return Kept(
            trace_id,
            flags | SAMPLED if sampled else flags,
            result.trace_state or TraceState(),
            result.attributes or {},
            sampled,
        )
    span_id = random.getrandbits(64)
    while not span_id:
        span_id = random.getrandbits(64)
    return traceparent(trace_id, span_id, flags)


@contextmanager
def chosen(trace_id: int) -> Iterator[None]:
    """The root span started inside takes `trace_id`."""
    token = _chosen.set(trace_id)
    try:
        yield
    finally:
        _chosen.reset(token)
