"""The history benchmark's events: realistic ones for a queue, and a million straight into SQL.

Both come from the fixtures in `tests/fixtures/avionte/`, with a fresh CorrelationId
each, and carry what the receiver and the history consumer would give them: the
receiver's headers, the body as received, the payload with its `Resource` decoded.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from consumers.dedupe import Connection
from consumers.history.store import _SCHEMA as SCHEMA
from consumers.history.store import TABLE, HistoryStore, day_of
from service.shared.bus import AuthMethod, BusNames, Outgoing, Receipt, event_message
from service.shared.envelope import parse
from tests.support import fixture_bodies, with_correlation_id

# Tenants and how many events each sends, as weights: a few large ones, a long tail.
TENANTS = (6, 17, 42, 105, 230, 311, 487, 502, 777, 901)
TENANT_WEIGHTS = (30, 20, 12, 10, 8, 6, 5, 4, 3, 2)
# Event kinds by fixture stem, and their weights: placements and talents most often.
KIND_WEIGHTS = {
    "placement_updated": 30,
    "talent_created": 15,
    "placement_started": 15,
    "contact_updated": 15,
    "company_updated": 10,
    "talent_merged": 10,
    "company_address_created": 5,
}
# Rows a statement inserts; two statements run at once, one per core.
CHUNK = 50_000


def realistic() -> Callable[[BusNames], Outgoing]:
    """A maker of messages for `prefill`: the fixtures in turn, each a fresh delivery."""
    bodies = itertools.cycle(fixture_bodies().values())

    def make(names: BusNames) -> Outgoing:
        body = with_correlation_id(next(bodies), str(uuid.uuid4()))
        receipt = Receipt(str(uuid.uuid4()), AuthMethod.API_KEY, datetime.now(UTC))
        return event_message(names, parse(body), body, receipt)

    return make


def templates() -> dict[str, tuple[str, str, str, str]]:
    """Per fixture stem: event name, routing key, body and payload, with `__CID__`, `__TENANT__`.

    The payload is the body with its `Resource` decoded, as the history keeps it.
    """
    found = {}
    for stem, body in fixture_bodies().items():
        envelope = parse(body)
        payload: dict[str, Any] = {
            **envelope.payload,
            "CorrelationId": "__CID__",
            "FrontOfficeTenantId": "__TENANT__",
        }
        resource = str(payload["Resource"]).replace(str(envelope.correlation_id), "__CID__")
        payload["Resource"] = resource
        decoded = {**payload, "Resource": orjson.loads(resource)}
        shaped, kept = (
            orjson.dumps(each).decode().replace('"__TENANT__"', "__TENANT__")
            for each in (payload, decoded)
        )
        found[stem] = (envelope.event_name, envelope.routing_key, shaped, kept)
    return found


# One row per number of the series: kind and tenant drawn by weight, times evenly spread
# from $2 by $3 microseconds a row, each shaped as `consumers.history.entry_from` keeps it.
_GENERATE = """
WITH drawn AS (
    SELECT $2::timestamptz + ((i + random()) * $3::bigint) * interval '1 microsecond'
               AS received_at,
           ($7::int[])[1 + floor(random() * array_length($7::int[], 1))::int] AS kind,
           ($8::bigint[])[1 + floor(random() * array_length($8::bigint[], 1))::int] AS tenant,
           gen_random_uuid()::text AS cid,
           gen_random_uuid()::text AS delivery
    FROM generate_series($9::bigint, $10::bigint) AS i
),
shaped AS (
    SELECT received_at, tenant, cid, delivery,
           ($4::text[])[kind] AS event,
           ($5::text[])[kind] AS routing_key,
           replace(replace(($6::text[])[kind], '__CID__', cid), '__TENANT__', tenant::text)
               AS body,
           replace(replace(($11::text[])[kind], '__CID__', cid), '__TENANT__', tenant::text)
               AS payload
    FROM drawn
)
INSERT INTO relay_history
    (scope, message_id, received_at, event, routing_key, tenant_id, delivery_id, auth,
     headers, body, payload)
SELECT $1, cid, received_at, event, routing_key, tenant, delivery, 'api_key',
       jsonb_build_object(
           'x-event-name', event,
           'x-received-at', to_char(received_at AT TIME ZONE 'UTC',
                                    'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'x-delivery-id', delivery,
           'x-auth', 'api_key',
           'x-tenant-id', tenant),
       convert_to(body, 'UTF8'),
       payload::jsonb
FROM shaped
"""


async def generate(
    store: HistoryStore, rows: int, since: datetime, until: datetime
) -> dict[str, float]:
    """Insert `rows` events received between `since` and `until`; ANALYZE; return seconds.

    As a bulk load is done: the indexes are dropped, the rows inserted by two
    connections at once (one per core), and the indexes built again by the store's own
    DDL. The table ends as the history consumer would have made it.
    """
    began = time.monotonic()
    day, days = day_of(since), set()
    while day <= day_of(until):
        days.add(day)
        day += timedelta(days=1)
    await store._partitions(days)  # the day partitions, by the writer's own DDL
    indexes = await store.pool.fetch("SELECT indexname FROM pg_indexes WHERE tablename = $1", TABLE)
    for row in indexes:
        await store.pool.execute(f"DROP INDEX {row['indexname']}")
    shapes = templates()
    stems = list(KIND_WEIGHTS)
    kinds = [i + 1 for i, stem in enumerate(stems) for _ in range(KIND_WEIGHTS[stem])]
    tenants = [t for t, weight in zip(TENANTS, TENANT_WEIGHTS, strict=True) for _ in range(weight)]
    step = max(1, int((until - since) / timedelta(microseconds=1) / rows))
    columns = [[shapes[stem][n] for stem in stems] for n in range(4)]
    await store.pool.execute(
        "INSERT INTO relay_history_keys (scope, routing_key) SELECT $1, unnest($2::text[]) "
        "ON CONFLICT DO NOTHING",
        store.scope,
        columns[1],
    )
    chunks = [(first, min(first + CHUNK, rows) - 1) for first in range(0, rows, CHUNK)]

    async def insert(connection: Connection) -> None:
        await connection.execute("SET synchronous_commit = off")
        while chunks:
            first, last = chunks.pop(0)
            await connection.execute(
                _GENERATE,
                store.scope,
                since,
                step,
                *columns[:3],
                kinds,
                tenants,
                first,
                last,
                columns[3],
            )

    async with store.pool.acquire() as one, store.pool.acquire() as two:
        await asyncio.gather(insert(one), insert(two))
    inserted = time.monotonic()
    async with store.pool.acquire() as connection:
        await connection.execute("SET maintenance_work_mem = '256MB'")
        await connection.execute(SCHEMA)  # what `HistoryStore.create` runs
    indexed = time.monotonic()
    await store.pool.execute("ANALYZE relay_history")
    return {
        "insert_seconds": inserted - began,
        "index_seconds": indexed - inserted,
        "analyze_seconds": time.monotonic() - indexed,
    }
