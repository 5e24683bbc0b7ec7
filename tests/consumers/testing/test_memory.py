"""`event.transaction()` under `deliver`: a clear error without a database, atomic with one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from consumers import Consumer, Event
from consumers.testing import MemoryDedupe, deliver, sample

crm = Consumer("crm-sync", retry_delays=(5,), dedupe=True)


@crm.on("contact.#")
async def write(event: Event) -> None:
    async with event.transaction() as db:
        await db.execute("INSERT INTO contacts (message_id) VALUES ($1)", event.message_id)
        if (event.resource or {}).get("FailInside") and event.attempt == 1:
            raise RuntimeError("fails inside the transaction")


async def test_without_a_database_the_transaction_says_what_it_needs() -> None:
    outcome = await deliver(crm, sample("contact_created"))
    assert outcome.status == "retry"
    assert isinstance(outcome.error, RuntimeError)
    assert "MemoryDedupe(database=" in str(outcome.error)


@pytest.fixture
async def pool(dedupe_database: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(dedupe_database, min_size=1, max_size=2) as made:
        await made.execute("CREATE TABLE IF NOT EXISTS contacts (message_id text)")
        await made.execute("TRUNCATE contacts")
        yield made


async def test_with_a_database_what_the_handler_writes_commits_with_the_record(
    pool: asyncpg.Pool,
) -> None:
    store = MemoryDedupe(database=pool)
    event, failing = sample("contact_created"), sample("contact_updated", FailInside=True)
    assert (await deliver(crm, event, dedupe=store)).status == "ok"
    assert (await deliver(crm, event, dedupe=store)).status == "duplicate"
    retried = await deliver(crm, failing, dedupe=store)
    assert (retried.status, retried.delay) == ("retry", 5)
    assert not store.done("crm-sync", failing["CorrelationId"])
    assert (await deliver(crm, failing, attempt=2, dedupe=store)).status == "ok"
    rows = [row["message_id"] for row in await pool.fetch("SELECT message_id FROM contacts")]
    assert sorted(rows) == sorted([event["CorrelationId"], failing["CorrelationId"]])
