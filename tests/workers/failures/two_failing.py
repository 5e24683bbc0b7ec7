"""Two consumers in one process that always fail, bound to the same events."""

from __future__ import annotations

from consumers import Consumer, Event

first = Consumer("fail-a", retry_delays=(30,), concurrency=32)
second = Consumer("fail-b", retry_delays=(30,), concurrency=32)


@first.on("#")
async def fail_a(event: Event) -> None:
    raise RuntimeError("a always fails")


@second.on("#")
async def fail_b(event: Event) -> None:
    raise RuntimeError("b always fails")
