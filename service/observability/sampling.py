"""A delivery's sampling, decided before anything is built for it.

At the deployed sampling (`parentbased_traceidratio`, 0.1) nine deliveries in ten are
not sampled. For those the receiver makes no span, copies no context and builds no
attribute: it picks the trace id, asks the sampler, and on a "drop" keeps only the ids
(`dropped`), which the message's `traceparent` (sampled flag off, so that consumers
drop it too) and the log line carry. A kept delivery's span gets that same trace id
(`ChosenIds`), so the sampler's answer is the SDK's.

Only the receiver's own root spans take this path; a sender's trusted `traceparent`
(`TRACE_SENDER_CONTEXT=authenticated`) goes through the SDK as before.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NamedTuple

from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, TraceState

# W3C trace flags: sampled, and (level 2) a random trace id.
SAMPLED = 0x01
RANDOM = 0x02


class Dropped(NamedTuple):
    """The ids of a delivery the sampler dropped."""

    trace_id: int
    span_id: int
    flags: int

    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"

    def ids(self) -> tuple[str, str]:
        return f"{self.trace_id:032x}", f"{self.span_id:016x}"


class Kept(NamedTuple):
    """A delivery the sampler kept: its trace id, and what the sampler gave its span."""

    trace_id: int
    flags: int
    trace_state: TraceState
    attributes: Mapping[str, Any]
    sampled: bool


dropped: ContextVar[Dropped | None] = ContextVar("relay_dropped_trace", default=None)
_chosen: ContextVar[int] = ContextVar("relay_chosen_trace_id", default=0)


class ChosenIds(RandomIdGenerator):
    """Random ids, except a root span's trace id chosen (and sampled) beforehand."""

    def generate_trace_id(self) -> int:
        return _chosen.get() or super().generate_trace_id()


def decide(tracer: Any, name: str) -> Kept | Dropped | None:
    """For a new root SERVER span `name`: choose its trace id and ask the sampler.

    Returns what the span gets when the sampler keeps it (start an SDK span inside
    `chosen`, or a recorded one), the ids to carry when it drops it, or None when this
    tracer is not the SDK's own (the SDK then decides as usual).
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
    return Dropped(trace_id, random.getrandbits(64) or 1, flags)


@contextmanager
def chosen(trace_id: int) -> Iterator[None]:
    """The root span started inside takes `trace_id`."""
    token = _chosen.set(trace_id)
    try:
        yield
    finally:
        _chosen.reset(token)
