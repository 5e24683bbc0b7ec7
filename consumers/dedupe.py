"""Once per message id across replicas: claims and records in PostgreSQL.

One table, `relay_dedupe`, holds a row per (scope, consumer, message id); the scope
is the vhost and BUS_PREFIX, so environments and consumers can share a database.
A row is either

- `claimed`: a replica handles the message now, until `lease_until`, which it keeps
  moving on while its handler runs; a crashed replica's claim simply runs out; or
- `done`: every handler succeeded; every later delivery is a duplicate.

`handled` names the handlers that already succeeded on an earlier attempt (one that
committed `event.transaction()`, or that ran before another handler raised): a retry
runs only the others. A handling that fails gives up its claim at once, so its retry
runs. The store answers; `consumers.runtime.fate` decides what becomes of the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias, TypeVar

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy
from yarl import URL

from consumers.consumer import Consumer
from consumers.errors import ConsumerError
from consumers.gathering import Gathering
from consumers.settings import WorkerSettings
from service.shared.brokers import display_url
from service.shared.errors import SettingsError
from service.shared.timing import backoff

log = structlog.get_logger("consumers.dedupe")

TABLE = "relay_dedupe"
POOL_SIZE = 10
OWN_POOL_SIZE = 3
# How often records past DEDUPE_RETENTION are removed, at most.
PRUNE_SECONDS = 3600.0
PRUNE_BATCH = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS relay_dedupe (
    scope       text        NOT NULL,
    consumer    text        NOT NULL,
    message_id  text        NOT NULL,
    state       text        NOT NULL CHECK (state IN ('claimed', 'done')),
    owner       text        NOT NULL,
    lease_until timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, consumer, message_id)
);
CREATE INDEX IF NOT EXISTS relay_dedupe_updated_at ON relay_dedupe (updated_at);
ALTER TABLE relay_dedupe ADD COLUMN IF NOT EXISTS handled text[] NOT NULL DEFAULT '{}';
"""

# A batch's claims and records go in one statement, keys in order (replicas lock rows
# alike). A claim: a new row, or a claim whose lease ran out, becomes ours; a live claim
# or a done row stays. A record: our own claim becomes done. A record whose row is gone
# (another replica took the claim over, then gave it up) is inserted done: its handling
# succeeded.
_SETTLE = """
INSERT INTO relay_dedupe AS row (scope, consumer, message_id, state, owner, lease_until)
SELECT $1, t.consumer, t.message_id, t.state, t.owner, now() + make_interval(secs => $6)
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
    AS t(consumer, message_id, owner, state)
ON CONFLICT (scope, consumer, message_id) DO UPDATE
    SET state = EXCLUDED.state, owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until,
        updated_at = now()
    WHERE row.state = 'claimed' AND CASE EXCLUDED.state
        WHEN 'claimed' THEN row.lease_until < now()
        ELSE row.owner = EXCLUDED.owner
    END
RETURNING row.owner, row.handled
"""
_STATES = """
SELECT d.consumer, d.message_id, d.state, extract(epoch FROM d.lease_until - now())
FROM relay_dedupe d
JOIN unnest($2::text[], $3::text[]) AS t(consumer, message_id)
  ON d.consumer = t.consumer AND d.message_id = t.message_id
WHERE d.scope = $1
"""
_RENEWS = """
UPDATE relay_dedupe AS d
SET lease_until = now() + make_interval(secs => $5), updated_at = now()
FROM unnest($2::text[], $3::text[], $4::text[]) AS t(consumer, message_id, owner)
WHERE d.scope = $1 AND d.consumer = t.consumer AND d.message_id = t.message_id
  AND d.owner = t.owner AND d.state = 'claimed'
RETURNING d.owner
"""
# One handler's success, inside its transaction; the last one's makes the row `done`.
_HANDLED = """
UPDATE relay_dedupe
SET handled = array_append(handled, $5), updated_at = now(),
    state = CASE WHEN $6 THEN 'done' ELSE state END
WHERE scope = $1 AND consumer = $2 AND message_id = $3 AND owner = $4 AND state = 'claimed'
"""
_RELEASE = """
DELETE FROM relay_dedupe
WHERE scope = $1 AND consumer = $2 AND message_id = $3 AND owner = $4 AND state = 'claimed'
"""
# A failed handling that leaves handlers done keeps them, and its claim ends at once.
_RELEASE_KEEPING = """
UPDATE relay_dedupe
SET handled = ARRAY(SELECT DISTINCT unnest(handled || $5::text[])),
    lease_until = '-infinity', updated_at = now()
WHERE scope = $1 AND consumer = $2 AND message_id = $3 AND owner = $4 AND state = 'claimed'
"""
# Old records go; a live claim stays, however old, so no second replica takes its message.
_PRUNE = """
DELETE FROM relay_dedupe WHERE ctid IN (
    SELECT ctid FROM relay_dedupe
    WHERE updated_at < now() - make_interval(secs => $1)
      AND NOT (state = 'claimed' AND lease_until >= now())
    LIMIT $2
)
"""

# The database errors a handling waits out: no connection (class 08), a server shutting
# down, restarting or starting up (57: 57P01, 57P03, ...), out of connections, memory or
# disk (53), a transaction rolled back by a conflict (40), and a standby not yet promoted
# (25006). Others are bugs and end like any fault.
UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)


class StoreUnreachable(ConsumerError):
    """DEDUPE_DATABASE_URL cannot be used at start; the message names the variable."""


class ClaimLost(Exception):
    """The claim ran out and another replica took the message; this handling commits nothing."""


class Recorder(Protocol):
    """Where a claim's `event.transaction()` records a handler's success.

    `DedupeStore` in PostgreSQL; `consumers.testing` keeps its records in memory.
    """

    scope: str

    def transaction(self, claim: Claim) -> AbstractAsyncContextManager[Connection]:
        """A transaction that records the running handler as succeeded when it commits."""


@dataclass(slots=True, eq=False)
class Claim:
    """This replica's claim on one message for one consumer.

    The worker keeps `pending` (the handlers still to succeed) and `current` (the one
    running) up to date, so that a transaction knows what it records.
    """

    store: Recorder
    consumer: str
    message_id: str
    owner: str
    handled: frozenset[str] = frozenset()  # succeeded on an earlier attempt
    pending: set[str] = field(default_factory=set)
    current: str | None = None
    done: bool = False

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.store.scope, self.consumer, self.message_id, self.owner)

    def committing(self) -> tuple[str, bool]:
        """The running handler a transaction records, and whether it is the last to succeed."""
        handler = self.current
        if handler is None or handler not in self.pending:
            raise RuntimeError("this handler already committed its transaction")
        return handler, self.pending == {handler}

    def committed(self, handler: str, last: bool) -> None:
        """`handler`'s transaction committed; with the last one the message is done."""
        self.pending.discard(handler)
        self.done = last


T = TypeVar("T")
Busy = float  # seconds until another replica's claim runs out
# What the batches are asked: a claim of (consumer, message id), or to record a claim done.
Ask: TypeAlias = "tuple[str, str] | Claim"
Answer: TypeAlias = "Claim | Literal['duplicate'] | Busy | bool"
# Subscripted only for the type checker: at run time the class takes no parameters.
Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"


async def _unchanged(connection: asyncpg.Connection) -> None:
    """What a connection of the store's own needs before going back to its pool: nothing."""


class DedupeStore:
    """The table, a connection pool, and the claims made through them."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        scope: str,
        *,
        lease: float,
        retention: float,
        own: asyncpg.Pool | None = None,
    ) -> None:
        self._pool = pool  # handlers' transactions
        # The store's own statements change no session state: their connections go back
        # to their pool without asyncpg's reset, a round trip each time otherwise.
        self._own = own or pool
        self.scope = scope
        self.lease = lease
        self.retention = retention
        # A claim's owner: this store's random prefix and a counter, unique without a
        # random draw (a system call) a message.
        self._owner_prefix = uuid.uuid4().hex[:12]
        self._owner_numbers = itertools.count()
        # Claims and records of the messages in flight go together: one statement for
        # many messages, not two for every one.
        self._settling: Gathering[Ask, Answer] = Gathering(self._settle_all)

    @classmethod
    async def open(
        cls,
        url: str,
        display: str,
        scope: str,
        *,
        lease: float,
        retention: float,
        patience: float = 0.0,
    ) -> DedupeStore:
        """Connect and create the table if it is not there; `display` names it without secrets.

        A database that is down (refusing, restarting, starting up) is waited for, up to
        `patience` seconds; one that refuses the login or names no database is not.
        """
        deadline = asyncio.get_running_loop().time() + patience
        failures = 0
        while True:
            try:
                return await cls._open(url, display, scope, lease=lease, retention=retention)
            except StoreUnreachable as unreachable:
                cause = unreachable.__cause__
                left = deadline - asyncio.get_running_loop().time()
                if not isinstance(cause, UNAVAILABLE) or left <= 0:
                    raise unreachable from None
                if failures == 0:
                    log.warning(
                        "dedupe store unavailable at start; waiting for it",
                        error=type(cause).__name__,
                        up_to_s=round(left, 1),
                    )
                await asyncio.sleep(min(left, backoff(RETRY_DELAYS, failures)))
                failures += 1

    @classmethod
    async def _open(
        cls, url: str, display: str, scope: str, *, lease: float, retention: float
    ) -> DedupeStore:
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=POOL_SIZE, timeout=10)
            try:
                own = await asyncpg.create_pool(
                    url, min_size=1, max_size=OWN_POOL_SIZE, timeout=10, reset=_unchanged
                )
            except BaseException:
                await pool.close()
                raise
        except (*UNAVAILABLE, asyncpg.PostgresError, ValueError) as exc:
            raise StoreUnreachable(
                f"DEDUPE_DATABASE_URL: cannot connect to {display}: {type(exc).__name__}"
            ) from exc
        try:
            async with pool.acquire() as connection, connection.transaction():
                # Concurrent CREATE ... IF NOT EXISTS can still collide; one at a time.
                await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", TABLE)
                await connection.execute(_SCHEMA)
        except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
            await own.close()
            await pool.close()
            raise StoreUnreachable(
                f"DEDUPE_DATABASE_URL: cannot create table relay_dedupe in {display}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return cls(pool, scope, lease=lease, retention=retention, own=own)

    async def close(self) -> None:
        if self._own is not self._pool:
            await self._own.close()
        await self._pool.close()

    async def claim(self, consumer: str, message_id: str) -> Claim | Literal["duplicate"] | Busy:
        """Claim the message, or say it is done already, or how long another claim lasts."""
        answer = await self._settling.ask((consumer, message_id))
        assert not isinstance(answer, bool)
        return answer

    async def finish(self, claim: Claim) -> bool:
        """Record the handling as done; False if the claim had run out and was taken."""
        recorded = await self._settling.ask(claim)
        assert isinstance(recorded, bool)
        claim.done = True
        return recorded

    async def _settle_all(self, asked: list[Ask]) -> list[Answer]:
        """The answers to a batch's claims and records, from one statement as a rule.

        An id asked twice, or asked while its record is in the batch, is answered 0.0
        (ask again at once); two records of one id (a claim of ours taken over by
        ourselves) go in statements one after the other.
        """
        prefix, numbers = self._owner_prefix, self._owner_numbers
        recording = {(item.consumer, item.message_id) for item in asked if isinstance(item, Claim)}
        # Per statement: key -> (position asked, owner, state)
        rounds: list[dict[tuple[str, str], tuple[int, str, str]]] = [{}]
        answers: list[Answer] = [0.0] * len(asked)
        for index, item in enumerate(asked):
            if isinstance(item, Claim):
                key = (item.consumer, item.message_id)
                free = next((batch for batch in rounds if key not in batch), None)
                if free is None:
                    free = {}
                    rounds.append(free)
                free[key] = (index, item.owner, "done")
            elif item not in recording and item not in rounds[0]:
                rounds[0][item] = (index, f"{prefix}-{next(numbers)}", "claimed")
        taken: dict[str, list[str]] = {}
        states: dict[tuple[str, str], tuple[str, float]] = {}
        async with self._own.acquire() as connection:
            for batch in rounds:
                if not batch:
                    continue
                keys = sorted(batch)
                rows = await connection.fetch(
                    _SETTLE,
                    self.scope,
                    [consumer for consumer, _ in keys],
                    [message_id for _, message_id in keys],
                    [batch[key][1] for key in keys],
                    [batch[key][2] for key in keys],
                    self.lease,
                )
                taken.update((row[0], row[1]) for row in rows)
            others = [
                key
                for key, (_, owner, state) in rounds[0].items()
                if state == "claimed" and owner not in taken
            ]
            if others:
                found = await connection.fetch(
                    _STATES, self.scope, [c for c, _ in others], [m for _, m in others]
                )
                states = {(row[0], row[1]): (row[2], float(row[3])) for row in found}
        for batch in rounds:
            for key, (index, owner, state) in batch.items():
                if state == "done":
                    answers[index] = owner in taken
                elif owner in taken:
                    answers[index] = Claim(self, *key, owner, frozenset(taken[owner]))
                elif key in states:
                    found_state, remaining = states[key]
                    answers[index] = "duplicate" if found_state == "done" else max(0.0, remaining)
                # else: released meanwhile, 0.0: try again at once
        return answers

    async def _each_claim(self, sql: str, claims: Sequence[Claim], *extra: object) -> list[bool]:
        """`sql` over these claims in one statement (keys in order); True where it took."""
        ordered = sorted(claims, key=lambda claim: claim.key)
        async with self._own.acquire() as connection:
            rows = await connection.fetch(
                sql,
                self.scope,
                [claim.consumer for claim in ordered],
                [claim.message_id for claim in ordered],
                [claim.owner for claim in ordered],
                *extra,
            )
        took = {row["owner"] for row in rows}
        return [claim.owner in took for claim in claims]

    async def renew(self, claim: Claim) -> bool:
        """Move the lease on; False if the claim is no longer this replica's."""
        [renewed] = await self.renew_all([claim])
        return renewed

    async def renew_all(self, claims: Sequence[Claim]) -> list[bool]:
        """Move these claims' leases on, in one statement; False where one is not ours now."""
        return await self._each_claim(_RENEWS, claims, self.lease)

    async def release(self, claim: Claim, succeeded: Sequence[str] = ()) -> None:
        """End a claim whose handling failed, so that its retry runs at once.

        The handlers that succeeded (`succeeded`, and on earlier attempts) are kept, so
        the retry runs only those that did not.
        """
        async with self._own.acquire() as connection:
            if claim.handled or succeeded:
                await connection.execute(_RELEASE_KEEPING, *claim.key, list(succeeded))
            else:
                await connection.execute(_RELEASE, *claim.key)

    @contextlib.asynccontextmanager
    async def transaction(self, claim: Claim) -> AsyncIterator[Connection]:
        """A transaction that records the running handler as succeeded when it commits.

        The last handler of the message to succeed records the message as done.
        """
        handler, last = claim.committing()
        async with self._pool.acquire() as connection, connection.transaction():
            yield connection
            status = await connection.execute(_HANDLED, *claim.key, handler, last)
            if status == "UPDATE 0":
                raise ClaimLost(f"the claim on {claim.message_id!r} ran out and was taken")
        claim.committed(handler, last)

    async def prune(self) -> int:
        """Remove records older than the retention; return how many."""
        removed = 0
        async with self._own.acquire() as connection:
            while True:
                status = await connection.execute(_PRUNE, self.retention, PRUNE_BATCH)
                count = int(status.split()[-1])
                removed += count
                if count < PRUNE_BATCH:
                    return removed

    async def prune_forever(self) -> None:
        """Prune now and then, for as long as the worker runs."""
        interval = max(0.5, min(PRUNE_SECONDS, self.retention / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                removed = await self.prune()
            except UNAVAILABLE as exc:
                log.warning("dedupe records not pruned", error=type(exc).__name__)
                continue
            if removed:
                log.info("dedupe records pruned", removed=removed)


# Pauses while the database cannot be reached, and while another replica holds a claim.
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)
BUSY_POLL_SECONDS = 0.25


class Patience:
    """The waiting around a store: through outages, and for other replicas' claims.

    It never gives up on its own: a message waits (unacked) until the question is
    answered, or until the worker stops and the broker takes the message back.
    """

    def __init__(self, store: DedupeStore) -> None:
        self.store = store
        self._down = False
        self._held: set[Claim] = set()
        self._renewing: asyncio.Task[None] | None = None

    def _failed(self, exc: BaseException, doing: str) -> None:
        if not self._down:
            log.warning(
                "dedupe store unavailable; messages wait",
                doing=doing,
                error=type(exc).__name__,
            )
        self._down = True

    def _worked(self) -> None:
        if self._down:
            log.info("dedupe store available again")
        self._down = False

    async def _outlasting(self, doing: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`'s answer, asked again with back-off for as long as the store is down."""
        failures = 0
        while True:
            try:
                answer = await call()
            except UNAVAILABLE as exc:
                self._failed(exc, doing)
                await asyncio.sleep(backoff(RETRY_DELAYS, failures))
                failures += 1
                continue
            self._worked()
            return answer

    async def claim(self, consumer: str, message_id: str) -> Claim | None:
        """Our claim, or None when a handling already succeeded (a duplicate)."""
        while True:
            decided = await self._outlasting(
                "claim", lambda: self.store.claim(consumer, message_id)
            )
            if decided == "duplicate":
                return None
            if isinstance(decided, Claim):
                return decided
            # Another replica handles it now: wait for it to finish, fail or run out.
            await asyncio.sleep(min(BUSY_POLL_SECONDS, max(decided, 0.01)))

    async def finish(self, claim: Claim) -> None:
        """Record a success, however long the database takes to come back."""
        if not await self._outlasting("record", lambda: self.store.finish(claim)):
            log.warning("the claim ran out before the handling ended; it may run twice")

    async def release(self, claim: Claim, succeeded: Sequence[str]) -> None:
        """End a failed handling's claim, keeping what succeeded, however long that takes.

        Giving up here could lose `succeeded`, and its handlers would run again.
        """
        await self._outlasting("release", lambda: self.store.release(claim, succeeded))

    @contextlib.contextmanager
    def holding(self, claim: Claim) -> Iterator[None]:
        """Keep the claim's lease moving on while the block (its handling) runs.

        One task renews every claim held, together, a third of a lease apart: a
        message costs no task of its own.
        """
        self._held.add(claim)
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.get_running_loop().create_task(self._renew_held())
        try:
            yield
        finally:
            self._held.discard(claim)

    async def _renew_held(self) -> None:
        while self._held:
            await asyncio.sleep(self.store.lease / 3)
            held = list(self._held)
            if not held:
                return
            try:
                kept = await self.store.renew_all(held)
            except UNAVAILABLE as exc:
                self._failed(exc, "renew")
                continue
            for claim, still in zip(held, kept, strict=True):
                if not still and claim in self._held:
                    log.warning(
                        "the claim ran out and was taken; this handling may run twice",
                        message_id=claim.message_id,
                    )
                    self._held.discard(claim)


async def open_store(consumers: Sequence[Consumer], settings: WorkerSettings) -> DedupeStore | None:
    """The store the consumers with dedupe on need, or None; raises when it cannot be had."""
    wanting = [c for c in consumers if c.dedupe]
    url = settings.dedupe_database_url
    if not wanting:
        return None
    if url is None:
        required = [c.name for c in wanting if c.dedupe is True]
        if required:
            raise SettingsError(
                "DEDUPE_DATABASE_URL",
                f"consumer {required[0]!r} has dedupe=True; set DEDUPE_DATABASE_URL "
                "(or DEDUPE_DATABASE_URL_FILE) to a PostgreSQL URL",
            )
        log.info(
            "DEDUPE_DATABASE_URL is not set: duplicates are not suppressed",
            consumers=[c.name for c in wanting],
        )
        return None
    scope = settings.scope
    display = display_url(URL(url.value))
    return await DedupeStore.open(
        url.value,
        display,
        scope,
        lease=settings.dedupe_lease,
        retention=settings.dedupe_retention,
        patience=settings.dedupe_start_timeout,
    )
