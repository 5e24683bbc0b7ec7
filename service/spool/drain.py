"""Draining the spool: republish oldest first, park what the broker keeps refusing, say when stuck.

A record leaves the spool only after its confirm. Records confirmed past one that
failed are remembered (in the cursor file too), so no confirmed record is published
again while the one before it waits. A record the broker refuses (nacks or returns)
`PARK_AFTER` times in a row is moved to `parked/`, so one record cannot hold up the
rest. A disk or file error is logged and retried with back-off; it never ends the
drain.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import structlog

from service.shared.bus import Outgoing
from service.shared.errors import PublishNacked, PublishReturned
from service.shared.timing import backoff
from service.spool.format import Damage, Record, scan
from service.spool.parked import ParkedRecords
from service.spool.segments import Ranges, Spool, strerror, within

log = structlog.get_logger("service.spool")

DRAIN_BATCH = 256
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)
# Refusals of one record in a row before it is parked: about ten seconds with the back-off.
PARK_AFTER = 5
BROKER_POLL_SECONDS = 0.2


class DrainState(StrEnum):
    IDLE = "idle"  # nothing waits
    WAITING = "waiting_for_broker"  # records wait, the broker is not connected
    DRAINING = "draining"  # the last attempt moved records
    STALLED = "stalled"  # records wait, the broker is connected, and the last attempt moved none


@dataclass(frozen=True, slots=True)
class DrainStatus:
    """What `/readyz` and the metrics say of the drain."""

    state: DrainState
    error: str | None
    parked: int


@dataclass(slots=True)
class _Walk:
    """The outcome of one batch, item by item."""

    finished: list[tuple[int, int]]
    drained: int = 0
    gone: int = 0  # records that left the spool: drained or parked
    gone_bytes: int = 0
    progressed: bool = False
    error: str | None = None
    cause: str | None = None

    def fail(self, cause: str | None, error: str) -> None:
        """Note a failure; `cause` None for one already counted (a record still waiting)."""
        if self.error is None:
            self.error = error
        if self.cause is None:
            self.cause = cause

    def finish(self, record: Record) -> None:
        self.finished.append((record.start, record.end))
        self.gone += 1
        self.gone_bytes += record.end - record.start
        self.progressed = True


@dataclass(slots=True)
class _Refusal:
    """How often the broker refused one record, and when it may be tried again."""

    count: int
    retry_at: float
    error: str


class Drainer:
    """Republishes one spool for as long as `run` runs."""

    def __init__(
        self,
        spool: Spool,
        publish: Callable[[Outgoing], Awaitable[None]],
        ready: Callable[[], bool],
        *,
        on_drained: Callable[[int], object] = lambda count: None,
        on_failure: Callable[[str], object] = lambda cause: None,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        self._spool = spool
        self._retry_delays = retry_delays
        self._publish = publish
        self._ready = ready
        self._on_drained = on_drained
        self._on_failure = on_failure
        self.parked = ParkedRecords(spool.directory)
        self._refusals: dict[tuple[int, int], _Refusal] = {}
        self._state = DrainState.IDLE
        self._error: str | None = None

    def status(self) -> DrainStatus:
        # Counted afresh: `python -m service parked --replay` removes files meanwhile.
        return DrainStatus(self._state, self._error, self.parked.count())

    async def run(self) -> None:
        """Drain whenever the broker is connected; never returns."""
        failures = 0
        while True:
            if not self._spool.has_work:
                self._settle(DrainState.IDLE, None)
                await self._spool.wait_for_records()
                continue
            if not self._ready():
                self._settle(DrainState.WAITING, self._error)
                await asyncio.sleep(BROKER_POLL_SECONDS)
                continue
            try:
                walk = await self._batch()
            except OSError as exc:
                walk = _Walk([])
                walk.fail("disk", strerror(exc))
            if walk is None:  # caught up with the writer
                await self._spool.wait_for_records()
                continue
            if walk.cause is not None:
                self._on_failure(walk.cause)
            if walk.progressed:
                failures = 0
                self._settle(DrainState.DRAINING, walk.error)
                continue
            self._settle(DrainState.STALLED, walk.error)
            await asyncio.sleep(backoff(self._retry_delays, failures))
            failures += 1

    def _settle(self, state: DrainState, error: str | None) -> None:
        """Take the new state; log when the drain fails, fails otherwise, or recovers."""
        before, before_error = self._state, self._error
        self._state, self._error = state, error
        if error is not None and error != before_error:
            records = self._spool.depth.records
            log.warning("spool drain failed", error=error, state=str(state), records=records)
        elif error is None and before_error is not None:
            log.info("spool drain recovered", state=str(state))
        if state is DrainState.IDLE and before is not DrainState.IDLE:
            log.info("spool drained")

    async def _batch(self) -> _Walk | None:
        """Publish the next batch and move the cursor; None when there is nothing to read."""
        segment, data = await self._spool.read_oldest()
        cursor, done = self._spool.cursor
        now = asyncio.get_running_loop().time()
        items: list[Record | Damage] = []
        sending: list[Record] = []
        for item in scan(data, cursor):
            items.append(item)
            if isinstance(item, Record) and not within(done, item.start):
                refusal = self._refusals.get((segment, item.start))
                if refusal is None or refusal.retry_at <= now:
                    sending.append(item)
                    if len(sending) >= DRAIN_BATCH:
                        break
        if not items:
            return _Walk([], progressed=True) if await self._spool.finish(segment) else None
        results = await asyncio.gather(
            *(self._publish(record.message) for record in sending), return_exceptions=True
        )
        outcome = {record.start: result for record, result in zip(sending, results, strict=True)}
        walk = _Walk([])
        for item in items:
            if within(done, item.start):
                walk.finished.append((item.start, item.end))
            elif isinstance(item, Damage):
                await self._move_aside(segment, data, item, walk)
            elif item.start in outcome:
                await self._settle_record(segment, data, item, outcome[item.start], walk)
            else:  # refused before, and its own back-off has not passed
                walk.fail(None, self._refusals[(segment, item.start)].error)
        new_cursor, new_done = _advance(cursor, (*done, *walk.finished))
        try:
            if (new_cursor, new_done) != (cursor, done):
                walk.progressed = walk.progressed or new_cursor != cursor
                if (error := await self._spool.advance(segment, new_cursor, new_done)) is not None:
                    walk.fail("disk", f"cursor not saved: {error}")
        finally:
            # Only now that the cursor holds them may they leave the count. It holds them
            # in memory before its save, so a save cut short (a cancel at shutdown) counts.
            if walk.gone:
                self._spool.forget(walk.gone, walk.gone_bytes)
            if walk.drained:
                self._on_drained(walk.drained)
        self._refusals = {
            key: refusal
            for key, refusal in self._refusals.items()
            if key[0] == segment and key[1] >= new_cursor
        }
        return walk

    async def _settle_record(
        self, segment: int, data: bytes, record: Record, result: object, walk: _Walk
    ) -> None:
        key = (segment, record.start)
        if result is None:
            self._refusals.pop(key, None)
            walk.finish(record)
            walk.drained += 1
            return
        if not isinstance(result, PublishNacked | PublishReturned):
            walk.fail("broker", type(result).__name__)
            return
        error = f"{type(result).__name__} for {record.message.routing_key}"
        earlier = self._refusals.get(key)
        refusals = 1 if earlier is None else earlier.count + 1
        # Each record waits out its own back-off, so a busy drain cannot park it in a blink.
        retry_at = asyncio.get_running_loop().time() + backoff(self._retry_delays, refusals - 1)
        self._refusals[key] = _Refusal(refusals, retry_at, error)
        walk.fail("refused", error)
        if refusals < PARK_AFTER:
            return
        name = f"{segment:020d}-{record.start}-{uuid.uuid4().hex[:8]}"
        try:
            path = await asyncio.to_thread(
                self.parked.park,
                name,
                data[record.start : record.end],
                reason=type(result).__name__,
                attempts=refusals,
            )
        except OSError as exc:
            walk.fail("disk", f"cannot park a record: {strerror(exc)}")
            return
        self._refusals.pop(key, None)
        walk.finish(record)
        log.error(
            "spool record parked: the broker refused it again and again",
            file=str(path),
            reason=type(result).__name__,
            attempts=refusals,
            exchange=record.message.exchange,
            routing_key=record.message.routing_key,
            message_id=record.message.message_id,
        )

    async def _move_aside(self, segment: int, data: bytes, damage: Damage, walk: _Walk) -> None:
        try:
            path = await asyncio.to_thread(
                self._spool.move_aside, segment, data[damage.start : damage.end], damage.start
            )
        except OSError as exc:
            walk.fail("disk", f"cannot move damage aside: {strerror(exc)}")
            return
        walk.finished.append((damage.start, damage.end))
        walk.progressed = True
        log.error(
            "corrupt spool record moved aside", file=str(path), bytes=damage.end - damage.start
        )


def _advance(cursor: int, finished: tuple[tuple[int, int], ...]) -> tuple[int, Ranges]:
    """The cursor moved over every finished stretch that touches it, and what is left past it."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(finished):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    rest: list[tuple[int, int]] = []
    for start, end in merged:
        if start <= cursor:
            cursor = max(cursor, end)
        else:
            rest.append((start, end))
    return cursor, tuple(rest)
