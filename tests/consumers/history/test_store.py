"""The history's table on the real PostgreSQL: once per id, partitions, retention, filters."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from consumers.history.query import Filter, count, parse_time, parse_where, search
from consumers.history.store import HistoryStore, HistoryUnavailable, open_pool, partition_name
from service.shared.errors import SettingsError
from tests.consumers.history.conftest import entry
from tests.databases import own_database_async


async def test_one_row_per_message_id_in_a_batch_and_across_batches(store: HistoryStore) -> None:
    first = entry()
    assert await store.write([first, first]) == 1
    assert await store.write([first]) == 0
    assert await count(store, Filter(message_id=first.message_id)) == 1
    [found] = await search(store, Filter(message_id=first.message_id), 10)
    assert found.body == first.body  # byte for byte
    assert found.headers == first.headers


async def test_deliveries_of_one_id_either_side_of_midnight_by_two_writers_make_one_row(
    dedupe_database: str, store: HistoryStore
) -> None:
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    before, after = midnight - timedelta(milliseconds=5), midnight + timedelta(milliseconds=5)
    ids = [f"straddle-{n}" for n in range(200)]
    other = HistoryStore(await open_pool(dedupe_database, "test database"), store.scope)
    try:
        for _ in range(5):  # five rounds of two writers racing on the same ids
            await asyncio.gather(
                store.write([entry(message_id=i, received_at=before) for i in ids]),
                other.write([entry(message_id=i, received_at=after) for i in reversed(ids)]),
            )
    finally:
        await other.close()
    rows = await store.pool.fetch(
        "SELECT message_id, count(*) AS n FROM relay_history WHERE scope = $1 GROUP BY 1",
        store.scope,
    )
    assert {row["message_id"] for row in rows} == set(ids)
    assert {row["n"] for row in rows} == {1}


async def test_retention_drops_whole_days_and_keeps_the_rest() -> None:
    async with own_database_async() as url:
        pool = await open_pool(url, "test database")
        history = HistoryStore(pool, "retention")
        try:
            await history.create()
            today = datetime.now(UTC).replace(hour=12)
            days_ago = [0, 1, 29, 30, 31, 45]
            await history.write([entry(received_at=today - timedelta(days=n)) for n in days_ago])
            dropped = await history.drop_expired(30)
            expected = [partition_name((today - timedelta(days=n)).date()) for n in (31, 45)]
            assert sorted(dropped) == sorted(expected)
            left = await pool.fetch("SELECT received_at FROM relay_history ORDER BY 1 DESC")
            kept = [(today.date() - row["received_at"].date()).days for row in left]
            assert kept == [0, 1, 29, 30]
            # A day dropped from under a writer is made again for its next event.
            await history.write([entry(received_at=today - timedelta(days=31))])
        finally:
            await history.close()


async def test_filters(store: HistoryStore) -> None:
    now = datetime.now(UTC)
    placed = entry("placement_updated", tenant=6, received_at=now - timedelta(hours=1))
    started = entry(
        "placement_started",
        tenant=12,
        received_at=now - timedelta(hours=3),
        Resource={"PlacementId": 86635},
    )
    talent = entry("talent_created", tenant=6, received_at=now - timedelta(days=2))
    await store.write([placed, started, talent])

    async def ids(chosen: Filter, limit: int = 50) -> list[str]:
        return [e.message_id for e in await search(store, chosen, limit)]

    assert await ids(Filter()) == [placed.message_id, started.message_id, talent.message_id]
    assert await ids(Filter(), limit=1) == [placed.message_id]
    assert await ids(Filter(since=parse_time("--since", "2h"))) == [placed.message_id]
    assert await ids(Filter(until=parse_time("--until", "2h"))) == [
        started.message_id,
        talent.message_id,
    ]
    assert await ids(Filter(event="placement.#")) == [placed.message_id, started.message_id]
    assert await ids(Filter(event="talent.created")) == [talent.message_id]
    assert await ids(Filter(event="company.#")) == []
    assert await ids(Filter(tenant=6)) == [placed.message_id, talent.message_id]
    assert await ids(Filter(message_id=talent.message_id)) == [talent.message_id]
    contained = Filter(where=parse_where('{"Resource": {"PlacementId": 86635}}'))
    assert await ids(contained) == [started.message_id]
    as_sent = Filter(where=parse_where('{"Resource": "{\\"PlacementId\\": 86635}"}'))
    assert await ids(as_sent) == [started.message_id]
    assert await ids(Filter(tenant=6, event="placement.#", since=now - timedelta(days=1))) == [
        placed.message_id
    ]


@pytest.mark.parametrize("text", ["99999999999d", "0001-01-01T00:00+05:00"])
def test_a_time_out_of_range_is_a_clear_error(text: str) -> None:
    with pytest.raises(SettingsError, match="--since: is out of range"):
        parse_time("--since", text)


def test_times_in_every_form() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert parse_time("--since", "90m", now) == now - timedelta(minutes=90)
    assert parse_time("--since", "3d", now) == now - timedelta(days=3)
    assert parse_time("--since", "2026-12-01T08:00") == datetime(2026, 12, 1, 8, tzinfo=UTC)
    offset = parse_time("--since", "2026-12-01T08:00+02:00")
    assert offset == datetime(2026, 12, 1, 6, tzinfo=UTC)


async def test_a_payload_postgresql_cannot_hold_as_jsonb_is_kept_as_its_body(
    store: HistoryStore,
) -> None:
    odd = entry(Note="a \u0000 inside")
    assert await store.write([odd]) == 1
    [found] = await search(store, Filter(message_id=odd.message_id), 1)
    assert found.payload is None
    assert found.body == odd.body


async def test_a_database_that_is_not_there_is_one_clear_error() -> None:
    url = "postgresql://nobody@127.0.0.1:1/none"
    with pytest.raises(HistoryUnavailable, match=f"HISTORY_DATABASE_URL: cannot connect to {url}"):
        await open_pool(url, url)
