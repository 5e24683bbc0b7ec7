"""Fixtures of the event history's tests: a store on the run's database, scoped to the test."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from consumers.history.store import Entry, HistoryStore, open_pool
from tests.support import BusView


@pytest.fixture
def history_env(dedupe_database: str) -> dict[str, str]:
    """What a history worker or command needs besides the broker settings."""
    return {"HISTORY_DATABASE_URL": dedupe_database, "METRICS_PORT": "0"}


@pytest.fixture
async def store(dedupe_database: str, bus: BusView) -> AsyncIterator[HistoryStore]:
    """The history under the test's prefix (its scope), tables created."""
    pool = await open_pool(dedupe_database, "test database")
    made = HistoryStore(pool, bus.names.prefix)
    await made.create()
    try:
        yield made
    finally:
        await pool.execute("DELETE FROM relay_history WHERE scope = $1", made.scope)
        await made.close()


def entry(
    event: str = "placement_updated",
    *,
    tenant: int | None = 6,
    received_at: datetime | None = None,
    message_id: str | None = None,
    **fields: Any,
) -> Entry:
    """An entry as the history consumer makes one from a delivery."""
    message_id = message_id or str(uuid.uuid4())
    payload = {"EventName": event, "FrontOfficeTenantId": tenant, "CorrelationId": message_id}
    payload.update(fields)
    body = json.dumps(payload).encode()
    routing_key = event.replace("_", ".")
    return Entry(
        message_id=message_id,
        received_at=received_at or datetime.now(UTC),
        event=event,
        routing_key=routing_key,
        tenant_id=tenant,
        delivery_id=str(uuid.uuid4()),
        auth="api_key",
        headers={"x-event-name": event, "x-tenant-id": tenant},
        body=body,
        payload=payload,
    )
