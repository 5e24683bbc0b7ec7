"""`consumers history search|replay` as operators type them, on the real broker and database."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from datetime import UTC, datetime, timedelta

import pytest

from consumers.history.store import HistoryStore
from consumers.topology import ConsumerQueues
from tests.consumers.history.conftest import entry
from tests.receivers import base_env
from tests.support import AMQP_URL, BusView, consumer_queue_names
from tests.tools.tcp_proxy import TcpProxy
from tests.worker_processes import SpawnWorker, run_cli
from tests.workers import crm_old, talent_v1

pytestmark = pytest.mark.rabbit


@pytest.fixture
def env(bus: BusView, history_env: dict[str, str]) -> dict[str, str]:
    return {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix, **history_env}


async def test_search_prints_newest_first_as_lines_or_json(
    env: dict[str, str], store: HistoryStore
) -> None:
    now = datetime.now(UTC)
    older = entry("talent_created", received_at=now - timedelta(hours=2))
    newer = entry("placement_updated", tenant=12, received_at=now - timedelta(minutes=5))
    await store.write([older, newer])
    code, out, err = await run_cli(env, "history", "search")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split("  ")[3] for line in lines] == [
        f"id={newer.message_id}",
        f"id={older.message_id}",
    ]
    assert "placement_updated  tenant=12" in lines[0]
    code, out, err = await run_cli(env, "history", "search", "--since", "1h", "--json")
    assert code == 0, err
    [found] = [json.loads(line) for line in out.splitlines()]
    assert found["message_id"] == newer.message_id
    assert found["event"] == "placement_updated"
    assert found["routing_key"] == "placement.updated"
    assert found["tenant_id"] == 12
    assert found["body"] == newer.body.decode()
    assert datetime.fromisoformat(found["received_at"]) == newer.received_at


async def test_nothing_found_is_exit_0_and_no_line(
    env: dict[str, str], store: HistoryStore
) -> None:
    await store.write([entry()])
    assert await run_cli(env, "history", "search", "--tenant", "999") == (0, "", "")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--since", "yesterday"], "error: --since: must be ISO 8601"),
        (["--where", "[1]"], "error: --where: must be a JSON object"),
        (["--where", "{oops"], "error: --where: is not JSON"),
        (["--event", "placement.*x"], "error: --event: pattern 'placement.*x'"),
    ],
)
async def test_bad_filters_are_one_line_and_exit_2(
    env: dict[str, str], args: list[str], expected: str
) -> None:
    code, out, err = await run_cli(env, "history", "search", *args)
    assert (code, out) == (2, "")
    assert err.startswith(expected), err


async def test_without_the_database_every_history_command_stops_naming_it(bus: BusView) -> None:
    env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix}
    for args in (["search"], ["replay", "anyone"]):
        code, out, err = await run_cli(env, "history", *args)
        assert (code, out) == (2, "")
        assert err.startswith("error: HISTORY_DATABASE_URL: is not set"), err


async def test_replay_sends_only_bound_events_to_that_consumer_only(
    bus: BusView, spawn_worker: SpawnWorker, env: dict[str, str], store: HistoryStore
) -> None:
    # Two consumers that exist on the bus, stopped so their queues can be read.
    for module, consumer in (
        ("tests.workers.crm_old", crm_old),
        ("tests.workers.talent_v1", talent_v1),
    ):
        worker = await spawn_worker(module, consumer.consumer, METRICS_PORT="0")
        assert await worker.stop(signal.SIGTERM) == 0
    now = datetime.now(UTC)
    placements = [
        entry("placement_updated", received_at=now - timedelta(minutes=n)) for n in (3, 2)
    ]
    talent = entry("talent_created", received_at=now - timedelta(minutes=1))
    await store.write([*placements, talent])

    code, out, err = await run_cli(env, "history", "replay", "crm-old", "--dry-run")
    assert code == 0, err
    assert out.strip().startswith("would replay 2 event(s) to crm-old, 1 skipped (not bound)")
    crm = ConsumerQueues(bus.names.prefix, "crm-old").main
    watch = ConsumerQueues(bus.names.prefix, "talent-watch").main
    assert (await bus.queue(crm)).declaration_result.message_count == 0  # nothing sent

    code, out, err = await run_cli(env, "history", "replay", "crm-old")
    assert code == 0, err
    assert out.strip() == "replayed 2 event(s) to crm-old, 1 skipped (not bound)"
    got = await bus.drain(await bus.queue(crm))
    assert [m.message_id for m in got] == [p.message_id for p in placements]  # oldest first
    assert all(m.headers["x-replayed-from"] == "history" for m in got)
    assert all(m.headers["x-routing-key"] == "placement.updated" for m in got)
    assert [m.body for m in got] == [p.body for p in placements]
    assert (await bus.queue(watch)).declaration_result.message_count == 0  # others: nothing


async def test_replay_to_an_unknown_consumer_names_the_known_ones(
    bus: BusView, spawn_worker: SpawnWorker, env: dict[str, str], store: HistoryStore
) -> None:
    worker = await spawn_worker("tests.workers.talent_v1", talent_v1.consumer, METRICS_PORT="0")
    await worker.stop(signal.SIGTERM)
    bus.forget_later(*consumer_queue_names(bus.names.prefix, talent_v1.consumer))
    code, out, err = await run_cli(env, "history", "replay", "nobody")
    assert (code, out) == (2, "")
    assert err.startswith("error: no consumer nobody")
    assert "talent-watch" in err


async def test_a_replay_stopped_with_ctrl_c_says_how_far_it_got(
    bus: BusView,
    spawn_worker: SpawnWorker,
    env: dict[str, str],
    store: HistoryStore,
    proxy: TcpProxy,
) -> None:
    worker = await spawn_worker("tests.workers.crm_old", crm_old.consumer, METRICS_PORT="0")
    assert await worker.stop(signal.SIGTERM) == 0
    start = datetime.now(UTC) - timedelta(hours=1)
    many = [
        entry("placement_updated", received_at=start + timedelta(milliseconds=n))
        for n in range(20_000)
    ]
    for at in range(0, len(many), 2000):
        await store.write(many[at : at + 2000])
    replaying = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumers",
        "history",
        "replay",
        "crm-old",
        env=base_env(**{**env, "AMQP_URL": proxy.url_for(AMQP_URL)}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # As at a terminal: a suite run in the background has SIGINT ignored, and the
        # child would inherit that (Python then installs no KeyboardInterrupt).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    crm = await bus.queue(ConsumerQueues(bus.names.prefix, "crm-old").main)
    async with asyncio.timeout(30):
        while not (await bus.queue(crm.name)).declaration_result.message_count:
            await asyncio.sleep(0.02)
    # Copies are arriving: hold the replay's link still so that it is midway for sure.
    proxy.stall()
    await asyncio.sleep(0.5)
    replaying.send_signal(signal.SIGINT)
    await asyncio.sleep(1)
    proxy.resume()  # so that it can close its connection
    out, err = await asyncio.wait_for(replaying.communicate(), 30)
    assert replaying.returncode == 130, err
    said = err.decode().strip().splitlines()[-1]
    found = re.fullmatch(
        r"interrupted: replayed (\d+) event\(s\) to crm-old \(each confirmed\), 0 skipped"
        r"(; to go on, add --since \S+)?",
        said,
    )
    assert found, said
    held = (await bus.queue(crm.name)).declaration_result.message_count or 0
    assert (int(found.group(1)) > 0) == (found.group(2) is not None)  # where to go on from
    assert int(found.group(1)) <= held < len(many)  # every confirmed copy arrived
    assert out == b""
