"""Once per message id across replicas, on the real PostgreSQL and real worker processes."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from consumers.dedupe import Claim, DedupeStore
from consumers.topology import ConsumerQueues
from tests.receivers import free_port
from tests.support import AMQP_URL, BusView
from tests.tools.postgres_faults import starting_up
from tests.tools.tcp_proxy import proxy_to
from tests.worker_processes import SpawnWorker, WorkerProcess, start_worker
from tests.workers.dedupe import once, once_b, once_pair

pytestmark = pytest.mark.rabbit


def records(path: Path, phase: str | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if phase is None or line["phase"] == phase]


async def until(condition: Any, within: float = 20) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.05)


async def publish_same(bus: BusView, message_id: str, times: int, **fields: Any) -> None:
    for _ in range(times):
        assert await bus.publish_event("talent_created", CorrelationId=message_id, **fields)


async def counted(worker: WorkerProcess, outcome: str) -> float:
    url = worker.events("worker started")[0]["metrics"].replace("0.0.0.0", "127.0.0.1")
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("relay_consumer_messages_total{") and f'outcome="{outcome}"' in line
    )


async def rows(url: str, prefix: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetch(
            "SELECT consumer, message_id, state FROM relay_dedupe WHERE scope = $1", prefix
        )
    finally:
        await connection.close()


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return tmp_path / "records.jsonl"


@pytest.fixture
def env(dedupe_database: str, record: Path) -> dict[str, str]:
    return {"DEDUPE_DATABASE_URL": dedupe_database, "RECORD_FILE": str(record)}


async def test_two_replicas_and_thirty_deliveries_run_the_handler_once(
    bus: BusView, spawn_worker: SpawnWorker, env: dict[str, str], record: Path
) -> None:
    replicas = [
        await spawn_worker(
            "tests.workers.dedupe.once",
            once.consumer,
            HANDLER_SECONDS="0.3",
            METRICS_PORT=str(free_port()),
            **env,
        )
        for _ in range(2)
    ]
    await bus.declare()
    await publish_same(bus, "same-1", 30)

    async def settled() -> float:
        return sum([await counted(w, "duplicate") + await counted(w, "ok") for w in replicas])

    async with asyncio.timeout(30):
        while await settled() < 30:
            await asyncio.sleep(0.1)
    assert len(records(record, "start")) == 1
    assert sum([await counted(w, "duplicate") for w in replicas]) == 29
    dead = await bus.queue(ConsumerQueues(bus.names.prefix, "once").dead)
    assert dead.declaration_result.message_count == 0


async def test_a_failed_handling_records_nothing_and_its_retry_runs(
    bus: BusView, spawn_worker: SpawnWorker, env: dict[str, str], record: Path
) -> None:
    await spawn_worker("tests.workers.dedupe.once", once.consumer, METRICS_PORT="0", **env)
    await bus.publish_event("talent_created", CorrelationId="fails-once", Fail=True)
    await until(lambda: len(records(record, "end")) == 1)
    assert [line["attempt"] for line in records(record, "start")] == [1, 2]
    assert [tuple(row) for row in await rows(env["DEDUPE_DATABASE_URL"], bus.names.prefix)] == [
        ("once", "fails-once", "done")
    ]


async def test_a_killed_workers_claim_runs_out_and_the_redelivery_runs(
    bus: BusView, spawn_worker: SpawnWorker, env: dict[str, str], record: Path
) -> None:
    lease = {"DEDUPE_LEASE": "2", "METRICS_PORT": "0"}
    doomed = await spawn_worker(
        "tests.workers.dedupe.once", once.consumer, HANDLER_SECONDS="60", **lease, **env
    )
    await bus.publish_event("talent_created", CorrelationId="killed-1")
    await until(lambda: len(records(record, "start")) == 1)
    doomed.process.send_signal(signal.SIGKILL)
    await doomed.process.wait()
    killed_at = time.monotonic()
    await spawn_worker("tests.workers.dedupe.once", once.consumer, **lease, **env)
    await until(lambda: len(records(record, "end")) == 1, within=30)
    [first, second] = records(record, "start")
    assert first["pid"] == doomed.process.pid
    assert second["pid"] != doomed.process.pid
    assert time.monotonic() - killed_at < 2 + 10  # the lease, then the redelivery


async def test_two_consumers_are_independent(
    bus: BusView, spawn_worker: SpawnWorker, env: dict[str, str], record: Path
) -> None:
    await spawn_worker("tests.workers.dedupe.once", once.consumer, METRICS_PORT="0", **env)
    await spawn_worker("tests.workers.dedupe.once_b", once_b.consumer, METRICS_PORT="0", **env)
    await publish_same(bus, "shared-1", 3)
    await until(lambda: len(records(record, "end")) == 2)
    await asyncio.sleep(0.5)
    assert len(records(record, "start")) == 2  # once for each consumer
    found = {tuple(r) for r in await rows(env["DEDUPE_DATABASE_URL"], bus.names.prefix)}
    assert found == {("once", "shared-1", "done"), ("once-b", "shared-1", "done")}


async def test_records_past_the_retention_are_removed(
    bus: BusView, spawn_worker: SpawnWorker, env: dict[str, str], record: Path
) -> None:
    await spawn_worker(
        "tests.workers.dedupe.once", once.consumer, DEDUPE_RETENTION="1", METRICS_PORT="0", **env
    )
    await bus.publish_event("talent_created", CorrelationId="short-lived")
    await until(lambda: len(records(record, "end")) == 1)
    assert len(await rows(env["DEDUPE_DATABASE_URL"], bus.names.prefix)) == 1
    async with asyncio.timeout(10):
        while await rows(env["DEDUPE_DATABASE_URL"], bus.names.prefix):
            await asyncio.sleep(0.2)


async def test_database_effects_commit_with_the_record_exactly_once(
    bus: BusView, spawn_worker: SpawnWorker, env: dict[str, str], record: Path
) -> None:
    url = env["DEDUPE_DATABASE_URL"]
    connection = await asyncpg.connect(url)
    await connection.execute("CREATE TABLE IF NOT EXISTS once_effects (message_id text, pid int)")
    for _ in range(2):
        await spawn_worker(
            "tests.workers.dedupe.once",
            once.consumer,
            HANDLER_SECONDS="0.1",
            METRICS_PORT="0",
            **env,
        )
    await publish_same(bus, "effect-1", 10, Effect=True, FailInside=True)
    await until(lambda: len(records(record, "end")) == 1)
    await asyncio.sleep(1)  # for any late duplicate
    effects = await connection.fetch("SELECT message_id FROM once_effects")
    await connection.close()
    # The first attempt wrote and failed inside the transaction: rolled back with its record.
    assert [row["message_id"] for row in effects] == ["effect-1"]


async def test_an_unreachable_database_holds_the_message_until_it_is_back(
    bus: BusView, spawn_worker: SpawnWorker, env: dict[str, str], record: Path
) -> None:
    async with proxy_to(env["DEDUPE_DATABASE_URL"]) as (proxy, through):
        worker = await spawn_worker(
            "tests.workers.dedupe.once",
            once.consumer,
            METRICS_PORT="0",
            **{**env, "DEDUPE_DATABASE_URL": through},
        )
        proxy.refuse(True)
        await proxy.cut()
        await bus.publish_event("talent_created", CorrelationId="waits-1")
        async with asyncio.timeout(15):
            while not worker.events("dedupe store unavailable; messages wait"):
                await asyncio.sleep(0.1)
        queues = ConsumerQueues(bus.names.prefix, "once")
        assert records(record) == []  # not handled without a claim
        for queue in (queues.main, queues.dead):  # not acked, not dead-lettered: held
            assert (await bus.queue(queue)).declaration_result.message_count == 0
        proxy.refuse(False)
        await until(lambda: len(records(record, "end")) == 1, within=20)
    assert worker.events("dedupe store available again")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, "error: DEDUPE_DATABASE_URL: consumer 'once' has dedupe=True; set"),
        ("mysql://x/y", "error: DEDUPE_DATABASE_URL: must be a postgresql:// URL with a host"),
        (
            "postgresql://relay:dedupe-pw-31337@127.0.0.1:1/none",
            "error: DEDUPE_DATABASE_URL: cannot connect to postgresql://relay:***@127.0.0.1:1/none",
        ),
    ],
    ids=["missing", "malformed", "unreachable"],
)
async def test_a_database_url_that_cannot_be_used_stops_the_worker_in_one_line(
    bus: BusView, tmp_path: Path, url: str | None, expected: str
) -> None:
    settings = {
        "AMQP_URL": AMQP_URL,
        "BUS_PREFIX": bus.names.prefix,
        "METRICS_PORT": "0",
        "DEDUPE_START_TIMEOUT": "1",
    }
    if url is not None:
        settings["DEDUPE_DATABASE_URL"] = url
    log = tmp_path / "worker.log"
    with pytest.raises(AssertionError, match="worker exited 2"):
        await start_worker("tests.workers.dedupe.once", log, settings)
    lines = log.read_text().strip().splitlines()
    assert lines[-1].startswith(expected), lines
    assert "31337" not in log.read_text()


async def test_a_worker_started_while_the_database_is_down_waits_for_it(
    bus: BusView, spawn_worker: SpawnWorker, env: dict[str, str], record: Path
) -> None:
    """A restart during a database outage is not a misconfiguration (default patience)."""
    async with proxy_to(env["DEDUPE_DATABASE_URL"]) as (proxy, through):
        proxy.answer(starting_up)

        async def start() -> WorkerProcess:
            return await spawn_worker(
                "tests.workers.dedupe.once",
                once.consumer,
                METRICS_PORT="0",
                **{**env, "DEDUPE_DATABASE_URL": through},
            )

        starting = asyncio.create_task(start())
        await asyncio.sleep(4)
        assert not starting.done()
        proxy.answer(None)
        worker = await starting
        [waiting] = worker.events("dedupe store unavailable at start; waiting for it")
        assert waiting["error"] == "CannotConnectNowError"
        await bus.publish_event("talent_created", CorrelationId="after-start-1")
        await until(lambda: len(records(record, "end")) == 1)


async def test_a_database_restart_while_a_handler_runs_never_runs_it_twice(
    bus: BusView, spawn_worker: SpawnWorker, env: dict[str, str], record: Path
) -> None:
    # The lease (2 s) runs out during the restart (7 s): the worker must wait for the
    # database to record the success, not hand the message back to be run again.
    async with proxy_to(env["DEDUPE_DATABASE_URL"]) as (proxy, through):
        worker = await spawn_worker(
            "tests.workers.dedupe.once",
            once.consumer,
            HANDLER_SECONDS="3",
            DEDUPE_LEASE="2",
            METRICS_PORT="0",
            **{**env, "DEDUPE_DATABASE_URL": through},
        )
        await bus.publish_event("talent_created", CorrelationId="restart-1")
        await until(lambda: len(records(record, "start")) == 1)
        proxy.answer(starting_up)  # PostgreSQL restarting: 57P03 to every new session
        await proxy.cut()
        await asyncio.sleep(7)
        proxy.answer(None)
        await until(lambda: worker.events("message handled"), within=30)
        await asyncio.sleep(3)  # past the lease and a requeue's pause, for a second run
    assert [line["outcome"] for line in worker.events("message handled")] == ["ok"]
    assert len(records(record, "start")) == 1
    assert worker.events("dedupe store unavailable; messages wait")
    queues = ConsumerQueues(bus.names.prefix, "once")
    for queue in (queues.main, queues.dead):
        assert (await bus.queue(queue)).declaration_result.message_count == 0
    assert [tuple(row) for row in await rows(env["DEDUPE_DATABASE_URL"], bus.names.prefix)] == [
        ("once", "restart-1", "done")
    ]


async def test_one_handlers_commit_does_not_hide_anothers_failure(
    bus: BusView, spawn_worker: SpawnWorker, env: dict[str, str], record: Path
) -> None:
    worker = await spawn_worker(
        "tests.workers.dedupe.once_pair",
        once_pair.consumer,
        METRICS_PORT="0",
        LOG_FORMAT="json",
        **env,
    )
    await bus.publish_event("talent_created", CorrelationId="pair-1")
    await until(lambda: len(records(record, "fails_first")) == 2)
    await until(lambda: len(worker.events("message handled")) == 2)
    # The committed handler ran once; the failed one ran again, and succeeded.
    assert [line["attempt"] for line in records(record, "commits")] == [1]
    assert [line["attempt"] for line in records(record, "fails_first")] == [1, 2]
    assert [line["outcome"] for line in worker.events("message handled")] == ["retried", "ok"]
    assert [tuple(row) for row in await rows(env["DEDUPE_DATABASE_URL"], bus.names.prefix)] == [
        ("once-pair", "pair-1", "done")
    ]
    # Now it is done: a later delivery is a duplicate, and runs neither.
    await bus.publish_event("talent_created", CorrelationId="pair-1")
    await until(lambda: len(worker.events("message handled")) == 3)
    assert worker.events("message handled")[-1]["outcome"] == "duplicate"
    assert len(records(record)) == 3


async def test_pruning_never_removes_a_live_claim(bus: BusView, dedupe_database: str) -> None:
    # A lease longer than the retention: the claim outlives its record's age.
    store = await DedupeStore.open(dedupe_database, "db", bus.names.prefix, lease=60, retention=1)
    try:
        claim = await store.claim("long", "live-1")
        assert isinstance(claim, Claim)
        await asyncio.sleep(1.5)
        await store.prune()
        assert isinstance(await store.claim("long", "live-1"), float)  # still held
    finally:
        await store.close()


def counting_batches(store: DedupeStore) -> list[int]:
    """The sizes of the store's batches of claims and records, from now on."""
    batches: list[int] = []
    settle_all = store._settle_all

    async def counted(asked: list[Any]) -> Any:
        batches.append(len(asked))
        return await settle_all(asked)

    store._settling._answer = counted
    return batches


async def test_the_claims_and_records_of_messages_in_flight_go_together(
    bus: BusView, dedupe_database: str
) -> None:
    store = await DedupeStore.open(dedupe_database, "db", bus.names.prefix, lease=60, retention=60)
    batches = counting_batches(store)
    try:
        ids = [f"id-{n}" for n in range(300)]
        claims = await asyncio.gather(*(store.claim("batch", i) for i in ids))
        assert all(isinstance(c, Claim) for c in claims)
        assert [c.message_id for c in claims if isinstance(c, Claim)] == ids  # each its own
        recorded = await asyncio.gather(*(store.finish(c) for c in claims if isinstance(c, Claim)))
        assert recorded == [True] * 300
        assert len(batches) <= 6, batches
        # Asked again, together with new ones and one asked twice in the same batch.
        again = await asyncio.gather(
            store.claim("batch", "id-1"),
            store.claim("batch", "fresh"),
            store.claim("batch", "fresh"),
        )
        assert again[0] == "duplicate"
        assert isinstance(again[1], Claim)
        assert again[2] == 0.0  # the second of one id in a batch asks again, alone
        assert isinstance(await store.claim("batch", "fresh"), float)  # held by the first
    finally:
        await store.close()
    assert {r["state"] for r in await rows(dedupe_database, bus.names.prefix)} == {
        "done",
        "claimed",
    }


async def test_two_replicas_claiming_the_same_ids_in_opposite_orders_each_get_half(
    bus: BusView, dedupe_database: str
) -> None:
    stores = [
        await DedupeStore.open(dedupe_database, "db", bus.names.prefix, lease=60, retention=60)
        for _ in range(2)
    ]
    try:
        ids = [f"shared-{n}" for n in range(400)]
        for _ in range(3):  # rounds: each on fresh ids
            ids = [f"{i}-x" for i in ids]
            first, second = await asyncio.gather(
                asyncio.gather(*(stores[0].claim("both", i) for i in ids)),
                asyncio.gather(*(stores[1].claim("both", i) for i in reversed(ids))),
            )
            mine = {c.message_id for c in first if isinstance(c, Claim)}
            theirs = {c.message_id for c in second if isinstance(c, Claim)}
            assert not mine & theirs  # no id claimed by both
            assert mine | theirs == set(ids)  # and none by neither
    finally:
        for store in stores:
            await store.close()


async def test_claims_and_records_of_one_batch_share_a_statement(
    bus: BusView, dedupe_database: str
) -> None:
    store = await DedupeStore.open(dedupe_database, "db", bus.names.prefix, lease=60, retention=60)
    batches = counting_batches(store)
    try:
        first = await store.claim("mix", "a")
        assert isinstance(first, Claim)
        # Its record, a claim of the same id and a claim of a new one, asked at once.
        recorded, again, fresh = await asyncio.gather(
            store.finish(first), store.claim("mix", "a"), store.claim("mix", "b")
        )
        assert batches[-1] == 3
        assert recorded is True
        assert again == 0.0  # recorded in that very batch: it asks again
        assert isinstance(fresh, Claim)
        assert await store.claim("mix", "a") == "duplicate"
        # Two records of one id at once (an old claim of ours, and the claim that took
        # over from it): one statement after the other, and only the owner's counts.
        stale = Claim(store, "mix", "b", "an-owner-long-gone")
        assert list(await asyncio.gather(store.finish(fresh), store.finish(stale))) == [True, False]
        # A record whose row another replica gave up is kept: its handling succeeded.
        lone = await store.claim("mix", "c")
        assert isinstance(lone, Claim)
        await store.release(lone)
        assert await store.finish(lone) is True
        assert await store.claim("mix", "c") == "duplicate"
    finally:
        await store.close()
    states = {r["message_id"]: r["state"] for r in await rows(dedupe_database, bus.names.prefix)}
    assert states == {"a": "done", "b": "done", "c": "done"}
