"""The event history in PostgreSQL: one row per message id, in a table partitioned by day.

`relay_history` is partitioned by the UTC day of `received_at`; a day's partition is
made when its first event arrives, and dropped whole once the day is older than
HISTORY_RETENTION_DAYS. Rows are keyed by scope (the vhost and BUS_PREFIX, as for
dedupe) and message id. Uniqueness cannot be a constraint across partitions, so a
writer takes a transaction-level advisory lock per id (hashed into buckets) and
inserts only ids no partition holds: two replicas, or two deliveries of one id on
either side of midnight, still make one row. `relay_history_keys` lists the routing
keys seen, so that a topic pattern becomes an indexed `routing_key = ANY(...)`.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import structlog

from consumers.dedupe import UNAVAILABLE
from consumers.errors import ConsumerError

log = structlog.get_logger("consumers.history")

TABLE = "relay_history"
POOL_SIZE = 8
# Ids are locked by bucket: a batch takes at most this many locks, however large.
LOCK_BUCKETS = 4096
_PARTITION = re.compile(r"^relay_history_(\d{8})$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS relay_history (
    scope       text        NOT NULL,
    message_id  text        NOT NULL,
    received_at timestamptz NOT NULL,
    event       text        NOT NULL,
    routing_key text        NOT NULL,
    tenant_id   bigint,
    delivery_id text,
    auth        text,
    headers     jsonb       NOT NULL,
    body        bytea       NOT NULL,
    payload     jsonb,
    stored_at   timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (received_at);
CREATE INDEX IF NOT EXISTS relay_history_by_id ON relay_history (message_id);
CREATE INDEX IF NOT EXISTS relay_history_by_time ON relay_history (scope, received_at);
CREATE INDEX IF NOT EXISTS relay_history_by_key
    ON relay_history (scope, routing_key, received_at);
CREATE INDEX IF NOT EXISTS relay_history_by_tenant
    ON relay_history (scope, tenant_id, routing_key, received_at);
CREATE INDEX IF NOT EXISTS relay_history_payload
    ON relay_history USING gin (payload jsonb_path_ops);
CREATE TABLE IF NOT EXISTS relay_history_keys (
    scope       text NOT NULL,
    routing_key text NOT NULL,
    PRIMARY KEY (scope, routing_key)
);
"""

_LOCK_IDS = """
SELECT count(pg_advisory_xact_lock(bucket)) FROM unnest($1::bigint[]) AS bucket
"""
_INSERT = """
INSERT INTO relay_history
    (scope, message_id, received_at, event, routing_key, tenant_id, delivery_id, auth,
     headers, body, payload)
SELECT $1, b.message_id, b.received_at, b.event, b.routing_key, b.tenant_id, b.delivery_id,
       b.auth, b.headers, b.body, b.payload
FROM unnest($2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::bigint[], $7::text[],
            $8::text[], $9::jsonb[], $10::bytea[], $11::jsonb[])
    AS b (message_id, received_at, event, routing_key, tenant_id, delivery_id, auth,
          headers, body, payload)
WHERE NOT EXISTS (
    SELECT 1 FROM relay_history h WHERE h.message_id = b.message_id AND h.scope = $1
)
"""
_KEYS = """
INSERT INTO relay_history_keys (scope, routing_key)
SELECT $1, key FROM unnest($2::text[]) AS key
ON CONFLICT DO NOTHING
"""
_PARTITIONS = """
SELECT c.relname FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname = 'relay_history'
"""


class HistoryUnavailable(ConsumerError):
    """HISTORY_DATABASE_URL cannot be used; the message names it (without its password)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One event as the history keeps it."""

    message_id: str
    received_at: datetime
    event: str
    routing_key: str
    tenant_id: int | None
    delivery_id: str | None
    auth: str | None
    headers: dict[str, Any]
    body: bytes
    payload: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        """What `history search --json` prints for it."""
        return {
            "message_id": self.message_id,
            "received_at": self.received_at.astimezone(UTC).isoformat(),
            "event": self.event,
            "routing_key": self.routing_key,
            "tenant_id": self.tenant_id,
            "delivery_id": self.delivery_id,
            "auth": self.auth,
            "headers": self.headers,
            "body": self.body.decode("utf-8", errors="replace"),
        }


def entry_of(row: asyncpg.Record) -> Entry:
    payload = row["payload"]
    return Entry(
        message_id=row["message_id"],
        received_at=row["received_at"],
        event=row["event"],
        routing_key=row["routing_key"],
        tenant_id=row["tenant_id"],
        delivery_id=row["delivery_id"],
        auth=row["auth"],
        headers=orjson.loads(row["headers"]),
        body=bytes(row["body"]),
        payload=orjson.loads(payload) if payload is not None else None,
    )


def partition_name(day: date) -> str:
    return f"{TABLE}_{day:%Y%m%d}"


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


async def open_pool(url: str, display: str, *, patience: float = 0.0) -> asyncpg.Pool:
    """A pool on the history database, waiting up to `patience` s for one that is down."""
    deadline = asyncio.get_running_loop().time() + patience
    delay = 0.5
    while True:
        try:
            return await asyncpg.create_pool(url, min_size=1, max_size=POOL_SIZE, timeout=10)
        except UNAVAILABLE as exc:
            if asyncio.get_running_loop().time() + delay > deadline:
                raise HistoryUnavailable(
                    f"HISTORY_DATABASE_URL: cannot connect to {display}: {type(exc).__name__}"
                ) from None
            log.warning("history database unavailable; waiting for it", error=type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        except (asyncpg.PostgresError, ValueError) as exc:
            raise HistoryUnavailable(
                f"HISTORY_DATABASE_URL: cannot connect to {display}: {type(exc).__name__}: {exc}"
            ) from None


class HistoryStore:
    """Writes and reads `relay_history` under one scope."""

    def __init__(self, pool: asyncpg.Pool, scope: str) -> None:
        self.pool = pool
        self.scope = scope
        self._days: set[date] = set()
        self._keys: set[str] = set()

    async def create(self) -> None:
        """Create the tables and indexes if they are not there (replicas take turns)."""
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", TABLE)
            await connection.execute(_SCHEMA)

    async def close(self) -> None:
        await self.pool.close()

    async def write(self, entries: Sequence[Entry]) -> int:
        """Store each entry whose message id the history does not hold; return how many."""
        batch = list({entry.message_id: entry for entry in reversed(entries)}.values())
        await self._partitions({day_of(entry.received_at) for entry in batch})
        buckets = sorted({hash_bucket(entry.message_id) for entry in batch})
        columns = _columns(batch)
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(_LOCK_IDS, buckets)
            status = await connection.execute(_INSERT, self.scope, *columns)
        new_keys = {entry.routing_key for entry in batch} - self._keys
        if new_keys:
            await self.pool.execute(_KEYS, self.scope, sorted(new_keys))
            self._keys |= new_keys
        return int(status.rsplit(" ", 1)[1])

    async def _partitions(self, days: Iterable[date]) -> None:
        missing = sorted(set(days) - self._days)
        if not missing:
            return
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", TABLE)
            for day in missing:
                start = datetime(day.year, day.month, day.day, tzinfo=UTC)
                end = start + timedelta(days=1)
                await connection.execute(
                    f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF {TABLE} "
                    f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                )
        self._days.update(missing)

    def forget_partitions(self) -> None:
        """A partition may have been dropped: ask the database again before the next write."""
        self._days.clear()

    async def drop_expired(self, retention_days: int, today: date | None = None) -> list[str]:
        """Drop every day's partition older than `retention_days`; return their names."""
        oldest_kept = (today or datetime.now(UTC).date()) - timedelta(days=retention_days)
        dropped = []
        async with self.pool.acquire() as connection:
            for row in await connection.fetch(_PARTITIONS):
                found = _PARTITION.match(row["relname"])
                if found is None:
                    continue
                day = datetime.strptime(found.group(1), "%Y%m%d").date()
                if day < oldest_kept:
                    async with connection.transaction():
                        await connection.execute(
                            "SELECT pg_advisory_xact_lock(hashtext($1))", TABLE
                        )
                        await connection.execute(f"DROP TABLE IF EXISTS {row['relname']}")
                    dropped.append(row["relname"])
                    self._days.discard(day)
        return dropped

    async def routing_keys(self) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT routing_key FROM relay_history_keys WHERE scope = $1", self.scope
        )
        return [row["routing_key"] for row in rows]


def hash_bucket(message_id: str) -> int:
    """The advisory lock a message id is written under (stable across processes)."""
    return zlib.crc32(message_id.encode()) % LOCK_BUCKETS


def _columns(batch: Sequence[Entry]) -> list[list[Any]]:
    return [
        [entry.message_id for entry in batch],
        [entry.received_at for entry in batch],
        [entry.event for entry in batch],
        [entry.routing_key for entry in batch],
        [entry.tenant_id for entry in batch],
        [entry.delivery_id for entry in batch],
        [entry.auth for entry in batch],
        [_json(entry.headers) or "{}" for entry in batch],
        [entry.body for entry in batch],
        [None if entry.payload is None else _json(entry.payload) for entry in batch],
    ]


def _json(value: Any) -> str | None:
    """`value` as JSON text PostgreSQL takes, or None (jsonb refuses the NUL character)."""
    text = orjson.dumps(value, default=str).decode()
    return None if "\\u0000" in text else text
