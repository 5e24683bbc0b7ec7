"""What becomes of a message: decided here once, for the worker and for `consumers.testing`.

`decide` runs the handlers of a consumer that match the event's routing key and take
its tenant (once per message id when the consumer dedupes), and returns the fate:

- `ok`: every handler returned; the message is acked.
- `filtered`: handlers match, but none takes its tenant; acked without running any.
- `duplicate`: a handling of its message id succeeded already; acked without running any.
- `retried`: a handler raised, and attempts are left: retried after `delay` seconds
  (`RetryLater` asks for at least its `after`).
- `dead`: a handler raised on the last attempt.
- `rejected`: a handler raised `Reject` (also inside a task group): dead at once.

The worker (`consumers.runtime.worker`) carries the fate out on the broker; the test
kit's `deliver` reports it. Neither restates these rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from consumers.consumer import Consumer, Handler, Route
from consumers.dedupe import Claim
from consumers.event import Event
from consumers.runtime.failures import NoHandler, rejection, retry_delay

Outcome = Literal["ok", "filtered", "duplicate", "retried", "dead", "rejected"]
# Outcomes after which the message is simply acked.
SETTLED: frozenset[Outcome] = frozenset({"ok", "filtered", "duplicate"})
# How a handler is called: directly, or inside a span while tracing is on.
Call = Callable[[Handler, Event], Awaitable[object]]


class Once(Protocol):
    """Once per message id: claims on a store (`consumers.dedupe.Patience`, or in memory)."""

    async def claim(self, consumer: str, message_id: str) -> Claim | None:
        """Our claim, or None when a handling of the id succeeded already."""

    async def finish(self, claim: Claim) -> None:
        """Record the handling as succeeded."""

    async def release(self, claim: Claim, succeeded: Sequence[str]) -> None:
        """End a failed handling's claim, keeping the handlers that succeeded."""

    def holding(self, claim: Claim) -> AbstractContextManager[None]:
        """Keep the claim's lease moving on while the block (the handling) runs."""


@dataclass(frozen=True, slots=True)
class Fate:
    """A message's fate; `failure` is what the letter names, `delay` the retry's wait."""

    outcome: Outcome
    failure: BaseException | None = None
    delay: float | None = None


async def direct(handler: Handler, event: Event) -> object:
    """Call `handler` with `event`, and nothing else."""
    return await handler(event)


async def decide(
    consumer: Consumer, event: Event, *, once: Once | None = None, call: Call = direct
) -> Fate:
    """Run `consumer`'s handlers for `event` and say what becomes of its message.

    `once` is the dedupe store when the consumer dedupes. A failed handling's claim is
    released before this returns, so its retry runs.
    """
    routes = consumer.routes_for(event.routing_key)
    taken = [route for route in routes if route.takes(event.tenant_id)]
    if routes and not taken:
        return Fate("filtered")
    claim = None
    if once is not None and taken:
        claim = await once.claim(consumer.name, event.message_id)
        if claim is None:
            return Fate("duplicate")
        event = replace(event, claim=claim)
    failure = await _run(consumer, event, taken, once, claim, call)
    if failure is None:
        if once is not None and claim is not None and not claim.done:
            await once.finish(claim)
        return Fate("ok")
    if rejected := rejection(failure):
        return Fate("rejected", rejected)
    delays = consumer.retry_delays
    if event.attempt > len(delays):
        return Fate("dead", failure)
    return Fate("retried", failure, retry_delay(delays, event.attempt, failure))


async def _run(
    consumer: Consumer,
    event: Event,
    taken: list[Route],
    once: Once | None,
    claim: Claim | None,
    call: Call,
) -> BaseException | None:
    """Run the handlers; return what one raised, or None. A failed claim is released."""
    held: AbstractContextManager[None] = nullcontext()
    succeeded: list[str] = []
    if once is not None and claim is not None:
        # Handlers that succeeded on an earlier attempt do not run again.
        taken = [route for route in taken if route.name not in claim.handled]
        claim.pending = {route.name for route in taken}
        held = once.holding(claim)
    with held:
        return await _handlers(consumer, event, taken, once, claim, call, succeeded)


async def _handlers(
    consumer: Consumer,
    event: Event,
    taken: list[Route],
    once: Once | None,
    claim: Claim | None,
    call: Call,
    succeeded: list[str],
) -> BaseException | None:
    try:
        if not taken and claim is None:
            # During a rolling deploy another replica may know this pattern: retry.
            raise NoHandler(f"no handler of {consumer.name!r} matches {event.routing_key!r}")
        for route in taken:
            if claim is not None:
                claim.current = route.name
            await call(route.handler, event)
            if claim is not None:
                claim.pending.discard(route.name)
                succeeded.append(route.name)
    except (Exception, asyncio.CancelledError) as failure:
        task = asyncio.current_task()
        if isinstance(failure, asyncio.CancelledError) and task and task.cancelling():
            raise  # the worker itself is cancelling the handler
        if once is not None and claim is not None:
            await once.release(claim, succeeded)
        return failure
    return None
