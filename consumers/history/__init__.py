"""The event history: every accepted event kept in PostgreSQL, searchable and replayable.

`python -m consumers run history` runs this consumer, `history`, bound to `#`: an
ordinary consumer with its own queue, writing each event once per message id, in
batches, to HISTORY_DATABASE_URL. `python -m consumers history search|replay` and the
console's History page read it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import structlog

from consumers.consumer import Consumer
from consumers.event import Event
from consumers.history.settings import HistorySettings
from consumers.history.store import Entry, HistoryStore, open_pool
from consumers.history.writer import Batcher
from consumers.runtime import resources
from consumers.settings import WorkerSettings

log = structlog.get_logger("consumers.history")

# Enough messages in flight for full batches; each handler only waits for its batch.
consumer = Consumer("history", concurrency=1000)
RETENTION_EVERY_SECONDS = 3600.0


class _History:
    """The process's store, batcher and retention loop; closed when the worker stops."""

    def __init__(self, store: HistoryStore, batcher: Batcher, retention_days: int) -> None:
        self.store = store
        self.batcher = batcher
        self.retention_days = retention_days
        self._pruning = asyncio.create_task(self._prune_forever(), name="history-retention")

    async def _prune_forever(self) -> None:
        while True:
            try:
                dropped = await self.store.drop_expired(self.retention_days)
            except Exception as exc:
                log.warning("dropping old history partitions failed", error=repr(exc))
            else:
                if dropped:
                    log.info("old history partitions dropped", partitions=dropped)
            await asyncio.sleep(RETENTION_EVERY_SECONDS)

    async def close(self) -> None:
        await self.batcher.close()
        self._pruning.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pruning
        await self.store.close()


_current: _History | None = None


@consumer.on_start
async def open_history() -> None:
    """Read HISTORY_*, connect, create the tables, and start writing and pruning."""
    global _current
    settings = HistorySettings.from_env(os.environ)
    worker = WorkerSettings.from_env(os.environ)
    pool = await open_pool(
        settings.database_url.value, settings.display, patience=settings.start_timeout
    )
    store = HistoryStore(pool, worker.scope)
    await store.create()
    batcher = Batcher(store)
    batcher.start()
    history = _History(store, batcher, settings.retention_days)
    _current = resources.shared("history", lambda: history)
    log.info(
        "history ready",
        database=settings.display,
        retention_days=settings.retention_days,
        scope=worker.scope,
    )


@consumer.on("#")
async def keep(event: Event) -> None:
    """Store the event (once per message id); return once it is committed."""
    assert _current is not None, "the history was not opened"
    await _current.batcher.add(entry_from(event))


def entry_from(event: Event) -> Entry:
    headers = event.headers
    payload: dict[str, Any] = dict(event.payload)
    if event.resource is not None:
        payload["Resource"] = event.resource
    return Entry(
        message_id=event.message_id,
        received_at=event.received_at,
        event=event.name,
        routing_key=event.routing_key,
        tenant_id=event.tenant_id,
        delivery_id=_text(headers.get("x-delivery-id")),
        auth=_text(headers.get("x-auth")),
        headers=headers,
        body=event.body,
        payload=payload,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
