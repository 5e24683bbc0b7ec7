"""The history consumer as a process of its own, draining a prefilled queue.

Timed by the rows themselves: `stored_at` is the start of the transaction that wrote a
row, and the writer writes one batch after the other, so every row stored before the
last batch's start was written between the first row's `stored_at` and the last's.
The worker's CPU time, and that of the PostgreSQL backends serving it, are read from
/proc over the same span (from the first row seen to the last).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from consumers.history import consumer as history_consumer
from consumers.history.store import HistoryStore
from tests.bench.history.events import realistic
from tests.bench.processes import cpu_seconds, settle, start
from tests.bench.workers import prefill
from tests.receivers import base_env
from tests.support import AMQP_URL

HISTORY_EVENTS = int(os.environ.get("BENCH_HISTORY_EVENTS", "20000"))
# Set to a file name, and py-spy (if installed) samples the worker while it drains (the
# last round's).
PROFILE = os.environ.get("BENCH_HISTORY_PROFILE", "")
APPLICATION = "bench-history"

_STORED = "SELECT count(*) FROM relay_history WHERE scope = $1 AND received_at >= $2"
_SPAN = """
WITH mine AS (
    SELECT stored_at FROM relay_history WHERE scope = $1 AND received_at >= $2
)
SELECT min(stored_at) AS first, max(stored_at) AS last,
       count(*) FILTER (WHERE stored_at < (SELECT max(stored_at) FROM mine)) AS before_last,
       count(DISTINCT stored_at) AS batches
FROM mine
"""
_BACKENDS = "SELECT pid FROM pg_stat_activity WHERE application_name = $1"


async def _stored(store: HistoryStore, since: datetime) -> int:
    return int(await store.pool.fetchval(_STORED, store.scope, since))


async def _backend_cpu(store: HistoryStore) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend the worker has open."""
    found = {}
    for row in await store.pool.fetch(_BACKENDS, APPLICATION):
        try:
            found[row["pid"]] = cpu_seconds(row["pid"])
        except FileNotFoundError:
            continue
    return found


async def _until(
    worker: asyncio.subprocess.Process,
    log: Path,
    done: Callable[[], Awaitable[bool]],
    within: float,
    step: float,
) -> None:
    async with asyncio.timeout(within):
        while not await done():
            if worker.returncode is not None:
                tail = (await asyncio.to_thread(log.read_text))[-2000:]
                raise RuntimeError(f"the history worker exited ({worker.returncode}):\n{tail}")
            await asyncio.sleep(step)


async def _profiler(pid: int) -> asyncio.subprocess.Process | None:
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not PROFILE or spy is None:
        return None
    return await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
        "--output", PROFILE, "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def write_rate(
    prefix: str, workdir: Path, url: str, store: HistoryStore, since: datetime
) -> dict[str, Any]:
    """`python -m consumers run history` stores HISTORY_EVENTS prefilled events."""
    await prefill(prefix, HISTORY_EVENTS, history_consumer, make=realistic())
    await settle()
    env = base_env(
        AMQP_URL=AMQP_URL,
        BUS_PREFIX=prefix,
        LOG_LEVEL="warning",
        METRICS_PORT="0",
        HISTORY_DATABASE_URL=f"{url}?application_name={APPLICATION}",
        # Nothing of the generated month is old enough to be dropped meanwhile.
        HISTORY_RETENTION_DAYS="60",
    )
    log = workdir / "history-worker.log"
    worker = await start(["-m", "consumers", "run", "history"], env, log)
    profiler = None
    try:
        await _until(worker, log, lambda: _has_rows(store, since), 120, 0.02)
        profiler = await _profiler(worker.pid)
        cpu_first, pg_first = cpu_seconds(worker.pid), await _backend_cpu(store)
        rows_first = await _stored(store, since)
        pg_last = pg_first

        async def all_stored() -> bool:
            nonlocal pg_last
            pg_last = await _backend_cpu(store) or pg_last
            return await _stored(store, since) >= HISTORY_EVENTS

        await _until(worker, log, all_stored, 600, 0.25)
        cpu_last = cpu_seconds(worker.pid)
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            await profiler.wait()
        if worker.returncode is None:
            worker.terminate()
            await worker.wait()
    span = await store.pool.fetchrow(_SPAN, store.scope, since)
    assert span is not None
    seconds = (span["last"] - span["first"]).total_seconds()
    measured = span["before_last"]
    pg_seconds = sum(pg_last.get(pid, 0.0) - pg_first.get(pid, 0.0) for pid in pg_last)
    observed = HISTORY_EVENTS - rows_first  # stored while the CPU times were read
    return {
        "events": HISTORY_EVENTS,
        "per_second": measured / seconds,
        "seconds": seconds,
        "batches": span["batches"],
        "rows_per_batch": HISTORY_EVENTS / span["batches"],
        "worker_cpu_us": (cpu_last - cpu_first) / observed * 1e6,
        "postgres_cpu_us": pg_seconds / observed * 1e6,
    }


async def _has_rows(store: HistoryStore, since: datetime) -> bool:
    return await _stored(store, since) > 0
