"""Search latency over the generated month, timed through `consumers.history.query.search`.

Each figure is the median and p95 of SEARCH_RUNS searches, after one untimed pass over
the same searches (warm). A run is what `history search` does: read the routing keys
the history has seen, query, and decode the page.
"""

from __future__ import annotations

import itertools
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from consumers.history.query import _COLUMNS, Filter, count, parse_event, search
from consumers.history.store import HistoryStore, day_of
from tests.bench.history.events import TENANTS

SEARCH_RUNS = 20
PAGE = 50
# Tenants large, middling and small, each with a common, a middling and a rare event:
# the planner reads a common pair through the day's time index, a rare one through the
# tenant index. Each run takes the next pair, and another day.
PAIRS = [
    (tenant, event)
    for tenant in (TENANTS[0], TENANTS[4], TENANTS[-1])
    for event in ("placement_updated", "talent_merged", "company_address_created")
]


async def _timed(store: HistoryStore, filters: list[Filter]) -> dict[str, Any]:
    for chosen in filters:
        await search(store, chosen, PAGE)
    times, found = [], []
    for chosen in filters:
        began = time.perf_counter()
        entries = await search(store, chosen, PAGE)
        times.append((time.perf_counter() - began) * 1000)
        found.append(len(entries))
    cuts = statistics.quantiles(times, n=20, method="inclusive")
    return {
        "runs": len(times),
        "p50_ms": statistics.median(times),
        "p95_ms": cuts[18],
        "max_ms": max(times),
        "found": min(found),
    }


async def plan(store: HistoryStore, chosen: Filter) -> list[str]:
    """EXPLAIN ANALYZE of the statement `search` runs for `chosen`."""
    where, args = await chosen.clause(store)
    sql = (
        f"EXPLAIN (ANALYZE, BUFFERS) SELECT {_COLUMNS} FROM relay_history "  # noqa: S608
        f"WHERE {where} ORDER BY received_at DESC, message_id DESC LIMIT {PAGE}"
    )
    return [row[0] for row in await store.pool.fetch(sql, *args)]


async def search_latency(store: HistoryStore, since: datetime) -> dict[str, Any]:
    """(a) a tenant's events of one kind over one day; (b) one message id.

    With the plan of each kind of search (every pair of (a), one id), for the report.
    """
    first = day_of(since) + timedelta(days=1)  # the first whole day
    days = [
        datetime(day.year, day.month, day.day, tzinfo=UTC)
        for day in (first + timedelta(days=n) for n in range(SEARCH_RUNS))
    ]
    by_day = [
        Filter(since=day, until=day + timedelta(days=1), event=parse_event(event), tenant=tenant)
        for day, (tenant, event) in zip(days, itertools.cycle(PAIRS), strict=False)
    ]
    # One id a day, at midday; a search by id looks in every day's partition.
    ids = [
        await store.pool.fetchval(
            "SELECT message_id FROM relay_history WHERE scope = $1 AND received_at >= $2 "
            "ORDER BY received_at LIMIT 1",
            store.scope,
            day + timedelta(hours=12),
        )
        for day in days
    ]
    by_id = [Filter(message_id=one) for one in ids]
    day = await _timed(store, by_day)
    one = await _timed(store, by_id)
    matching = [await count(store, chosen) for chosen in by_day]
    return {
        "day": {
            **day,
            "matching": [min(matching), max(matching)],
            "plans": [await plan(store, chosen) for chosen in by_day[: len(PAIRS)]],
        },
        "id": {**one, "plans": [await plan(store, by_id[0])]},
    }
