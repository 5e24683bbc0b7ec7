"""The event history's phase of the benchmark: write rate, search latency, replay rate.

On a PostgreSQL database of its own and a bus prefix of its own, in this order:

1. a month of history, HISTORY_ROWS events, generated straight into `relay_history`;
2. the history consumer, as a process, stores HISTORY_EVENTS prefilled events on top;
3. searches over the month, through `consumers.history.query.search`;
4. the events of step 2 replayed to one consumer's queue.

Steps 2 and 4 are done ROUNDS times, and the best round of each counts, as the
workers' phase does: this machine's speed drifts.

Everything it declared, and the database, are gone at the end.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from consumers.history import consumer as history_consumer
from consumers.history.store import HistoryStore, open_pool
from consumers.settings import WorkerSettings
from service.shared.environment import Secret
from tests.bench.history.events import generate
from tests.bench.history.replay import replay_rate
from tests.bench.history.replay import target as replay_target
from tests.bench.history.search import search_latency
from tests.bench.history.write import write_rate
from tests.bench.processes import settle
from tests.bench.workers import remove_queues
from tests.databases import own_database_async
from tests.support import AMQP_URL, open_bus

HISTORY_ROWS = int(os.environ.get("BENCH_HISTORY_ROWS", "1000000"))
HISTORY_DAYS = 30
ROUNDS = 2


async def history(prefix: str, workdir: Path) -> dict[str, Any]:
    """Every history figure, on `prefix` (which it cleans up) and a database of its own."""
    scope = WorkerSettings(amqp_url=Secret(AMQP_URL), bus_prefix=prefix).scope
    began = time.monotonic()
    try:
        async with own_database_async() as url:
            pool = await open_pool(url, "the benchmark's database")
            store = HistoryStore(pool, scope)
            try:
                await store.create()
                now = datetime.now(UTC)
                month = now - timedelta(days=HISTORY_DAYS)
                print(f"  generating {HISTORY_ROWS:,} events ...", flush=True)
                generated = await generate(store, HISTORY_ROWS, month, now)
                print(f"  generated in {sum(generated.values()):.0f} s", flush=True)
                writes, starts = [], []
                for _ in range(ROUNDS):
                    await settle()
                    starts.append(datetime.now(UTC))
                    writes.append(await write_rate(prefix, workdir, url, store, starts[-1]))
                    rate = writes[-1]["per_second"]
                    print(f"  history consumer: {rate:8.0f} events/s", flush=True)
                searched = await search_latency(store, month)
                day, one = searched["day"]["p95_ms"], searched["id"]["p95_ms"]
                print(f"  search p95: {day:.1f} ms (a day), {one:.1f} ms (an id)", flush=True)
                replays = []
                # Each round replays the events one write round stored.
                for since, until in zip(starts, [*starts[1:], None], strict=True):
                    replays.append(await replay_rate(prefix, store, since, until))
                    rate = replays[-1]["per_second"]
                    print(f"  replay: {rate:8.0f} events/s", flush=True)
            finally:
                await store.close()
    finally:
        await cleanup(prefix)
    return {
        "rows": HISTORY_ROWS,
        "generated": generated,
        "write": max(writes, key=lambda run: run["per_second"]),
        "write_rounds": writes,
        "search": searched,
        "replay": max(replays, key=lambda run: run["per_second"]),
        "replay_rounds": replays,
        "seconds": time.monotonic() - began,
    }


async def cleanup(prefix: str) -> None:
    """Delete the queues and exchanges the history phase declared under `prefix`."""
    await remove_queues(prefix, history_consumer, replay_target)
    connection, bus = await open_bus(prefix)
    async with connection:
        await bus.remove_all()
