"""The history consumer as operators run it: real worker processes, broker and database."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from consumers import history
from consumers.history.query import Filter, count, search
from consumers.history.store import HistoryStore
from tests.support import AMQP_URL, BusView
from tests.worker_processes import SpawnWorker, run_cli, start_worker

pytestmark = pytest.mark.rabbit


async def rows_per_id(store: HistoryStore) -> dict[str, int]:
    rows = await store.pool.fetch(
        "SELECT message_id, count(*) AS n FROM relay_history WHERE scope = $1 GROUP BY 1",
        store.scope,
    )
    return {row["message_id"]: row["n"] for row in rows}


async def until_stored(store: HistoryStore, expected: int, within: float = 60) -> None:
    async with asyncio.timeout(within):
        while await count(store, Filter()) < expected:
            await asyncio.sleep(0.1)


async def test_each_message_id_is_one_row_however_often_it_comes(
    bus: BusView, spawn_worker: SpawnWorker, history_env: dict[str, str], store: HistoryStore
) -> None:
    env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix}
    await bus.declare()
    early = [
        await bus.publish_event("talent_created", CorrelationId=f"early-{n}") for n in range(3)
    ]
    await spawn_worker("history", history.consumer, **history_env)
    # Before any consumer was bound, these went to `.unrouted`; a reroute brings them.
    code, out, _ = await run_cli(env, "reroute")
    assert code == 0, out
    repeated = "repeated-1"
    for _ in range(3):
        await bus.publish_event("placement_updated", CorrelationId=repeated)
    await until_stored(store, 4)
    # Replayed to the history itself: copies of ids it holds, still one row each.
    code, out, err = await run_cli({**env, **history_env}, "history", "replay", "history")
    assert code == 0, err
    assert out.strip() == "replayed 4 event(s) to history, 0 skipped (not bound)"
    for _ in range(2):
        await bus.publish_event("talent_created", CorrelationId=early[0])
    await asyncio.sleep(2)  # what was sent again has been handled by now
    assert await rows_per_id(store) == {repeated: 1, **dict.fromkeys(early, 1)}
    [kept] = await search(store, Filter(message_id=repeated), 10)
    assert kept.event == "placement_updated"
    assert kept.routing_key == "placement.updated"
    assert kept.tenant_id == 6
    assert kept.auth == "api_key"
    assert kept.delivery_id
    assert kept.headers["x-delivery-id"] == kept.delivery_id
    assert kept.headers["x-received-at"]


async def test_two_replicas_and_one_killed_mid_stream_store_every_event_once(
    bus: BusView, spawn_worker: SpawnWorker, history_env: dict[str, str], store: HistoryStore
) -> None:
    replicas = [await spawn_worker("history", history.consumer, **history_env) for _ in range(2)]
    sent = []
    for n in range(1500):
        sent.append(await bus.publish_event("placement_updated", CorrelationId=f"s-{n}"))
        if n == 500:
            replicas[0].process.send_signal(signal.SIGKILL)
        if n == 900:
            await spawn_worker("history", history.consumer, **history_env)
    await until_stored(store, len(sent))
    await asyncio.sleep(1)  # redeliveries of what the killed replica held
    assert await rows_per_id(store) == dict.fromkeys(sent, 1)
    assert await replicas[0].process.wait() == -signal.SIGKILL


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "error: HISTORY_DATABASE_URL: is not set (nor HISTORY_DATABASE_URL_FILE)"),
        (
            {"HISTORY_RETENTION_DAYS": "0"},
            "error: HISTORY_RETENTION_DAYS: must be an integer from 1 to 3650, got 0",
        ),
    ],
    ids=["no database", "retention of 0 days"],
)
async def test_bad_settings_stop_the_worker_in_one_line(
    bus: BusView,
    history_env: dict[str, str],
    tmp_path: Path,
    settings: dict[str, str],
    expected: str,
) -> None:
    env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix, "METRICS_PORT": "0", **settings}
    if settings:
        env["HISTORY_DATABASE_URL"] = history_env["HISTORY_DATABASE_URL"]
    log = tmp_path / "worker.log"
    with pytest.raises(AssertionError, match="worker exited 2"):
        await start_worker("history", log, env)
    assert log.read_text().strip().splitlines()[-1].startswith(expected)
