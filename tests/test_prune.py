"""A renamed consumer: `consumers list` shows the old one, and `prune` retires it losing nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from consumers.loader import load
from consumers.topology import ConsumerQueues
from tests.support import AMQP_URL, BusView
from tests.worker_processes import SpawnWorker, run_cli
from tests.workers import crm_new, crm_old, recorder

pytestmark = pytest.mark.rabbit


async def depth(bus: BusView, queue: str) -> int:
    declared = await bus.channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


async def test_a_renamed_consumer_is_shown_and_retired_without_losing_its_backlog(
    bus: BusView, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix}
    old = ConsumerQueues(bus.names.prefix, "crm-old")
    new = ConsumerQueues(bus.names.prefix, "crm-sync")
    record = tmp_path / "handled.txt"

    first = await spawn_worker("tests.workers.crm_old", crm_old.consumer, METRICS_PORT="0")
    assert await first.stop() == 0
    backlog = [await bus.publish_event("placement_updated") for _ in range(5)]
    # The renamed consumer is deployed; the old queue is still bound, so it keeps filling.
    await spawn_worker(
        "tests.workers.crm_new", crm_new.consumer, RECORD_FILE=str(record), METRICS_PORT="0"
    )
    both = [await bus.publish_event("placement_updated") for _ in range(3)]
    async with asyncio.timeout(10):
        while await depth(bus, old.main) < 8:
            await asyncio.sleep(0.05)

    code, out, _ = await run_cli(env, "list", "tests.workers.crm_new")
    assert code == 0
    assert "crm-sync  (tests.workers.crm_new)" in out
    assert "crm-old  (8 waiting; retire it with: python -m consumers prune crm-old)" in out

    code, _, err = await run_cli(env, "prune", "crm-old", "--delete")
    assert code == 1
    assert f"not deleted: messages wait in {old.main} (8)" in err

    code, out, err = await run_cli(env, "prune", "crm-old", "--into", "crm-sync")
    assert code == 0, err
    assert "crm-old: unbound placement.#; no new events reach it" in out
    assert f"moved 8 waiting message(s) to {new.main}" in out
    later = [await bus.publish_event("placement_updated") for _ in range(2)]
    async with asyncio.timeout(15):
        while len(set(record.read_text().split())) < len({*backlog, *both, *later}):
            await asyncio.sleep(0.05)
    handled = record.read_text().split()
    assert set(handled) == {*backlog, *both, *later}  # the backlog reached the new consumer
    assert await depth(bus, old.main) == 0  # and nothing new reaches the old queue

    code, out, err = await run_cli(env, "prune", "crm-old", "--delete")
    assert code == 0, err
    assert "deleted" in out
    code, out, _ = await run_cli(env, "list", "tests.workers.crm_new")
    assert "crm-old" not in out


async def test_a_consumer_still_consumed_is_not_pruned(
    bus: BusView, spawn_worker: SpawnWorker
) -> None:
    await spawn_worker("tests.workers.crm_old", crm_old.consumer, METRICS_PORT="0")
    env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix}
    code, _, err = await run_cli(env, "prune", "crm-old")
    assert code == 1
    assert "1 worker(s) still consume" in err


def test_a_module_runs_only_the_consumers_it_made() -> None:
    # crm_new imports recorder's consumer; running crm_new must not run that one too.
    assert [consumer for _, consumer in load(["tests.workers.crm_new"])] == [crm_new.consumer]
    assert recorder.consumer.module == "tests.workers.recorder"
