"""A renamed consumer: `consumers list` shows the old one, and `prune` retires it losing nothing."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from consumers.loader import load
from consumers.operations import prune
from consumers.operations.dead import move_messages as real_move
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


async def exists(queue: str) -> bool:
    # A passive declare of a missing queue closes the channel: a connection of its own.
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
        return True


async def fill(bus: BusView, queue: str, ids: list[str]) -> None:
    underlay = await bus.channel.get_underlay_channel()
    for start in range(0, len(ids), 500):
        await asyncio.gather(
            *(
                underlay.basic_publish(
                    b"{}",
                    routing_key=queue,
                    properties=aio_pika.Message(b"", message_id=id_).properties,
                )
                for id_ in ids[start : start + 500]
            )
        )


async def test_prune_into_and_delete_loses_nothing_a_retry_queue_hands_back_meanwhile(
    bus: BusView, spawn_worker: SpawnWorker
) -> None:
    env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix}
    old = ConsumerQueues(bus.names.prefix, "crm-old")
    new = ConsumerQueues(bus.names.prefix, "crm-sync")
    for module, consumer in (("crm_old", crm_old.consumer), ("crm_new", crm_new.consumer)):
        started = await spawn_worker(f"tests.workers.{module}", consumer, METRICS_PORT="0")
        assert await started.stop() == 0
    waiting = [f"w-{n}" for n in range(3000)]
    retrying = [f"r-{n}" for n in range(50)]
    await fill(bus, old.main, waiting)
    # Expiring into crm-old's queue one second from now, while its backlog is moved.
    await fill(bus, old.retry(1), retrying)
    code, out, err = await run_cli(env, "prune", "crm-old", "--into", "crm-sync", "--delete")
    arrived = {str(m.message_id) for m in await bus.drain(await bus.queue(new.main))}
    if code == 0:
        assert arrived == {*waiting, *retrying}, out
        assert "deleted" in out
    else:
        # Refusing is allowed; losing is not: whatever was not moved is still there.
        left = await depth(bus, old.main) + await depth(bus, old.retry(1))
        assert len(arrived) + left == len(waiting) + len(retrying), err


async def test_prune_then_prune_delete_leaves_nothing_behind(
    bus: BusView, spawn_worker: SpawnWorker
) -> None:
    env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix}
    # Retry delays other than the defaults: only the registry knows these queues.
    started = await spawn_worker("tests.workers.crm_old", crm_old.consumer, METRICS_PORT="0")
    assert await started.stop() == 0
    old = ConsumerQueues(bus.names.prefix, "crm-old")
    assert (await run_cli(env, "prune", "crm-old"))[0] == 0
    code, out, err = await run_cli(env, "prune", "crm-old", "--delete")
    assert code == 0, err
    for queue in (old.main, old.dead, old.retry(1), old.bindings):
        assert not await exists(queue), queue
    code, out, _ = await run_cli(env, "list", "tests.workers.crm_new")
    assert "crm-old" not in out


async def test_list_advises_pruning_only_a_consumer_no_worker_runs(
    bus: BusView, spawn_worker: SpawnWorker
) -> None:
    env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix}
    await spawn_worker("tests.workers.crm_old", crm_old.consumer, METRICS_PORT="0")
    code, out, _ = await run_cli(env, "list", "tests.workers.crm_new")
    assert code == 0
    assert "crm-old  (0 waiting; 1 worker(s) attached)" in out
    assert "prune crm-old" not in out


async def test_a_retry_message_expiring_mid_prune_is_moved_not_deleted(
    bus: BusView, spawn_worker: SpawnWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worst moment, made certain: the retry queue's messages expire into the main
    # queue (as its dead-lettering does) just as prune comes to move that retry queue.
    old = ConsumerQueues(bus.names.prefix, "crm-old")
    new = ConsumerQueues(bus.names.prefix, "crm-sync")
    for module, consumer in (("crm_old", crm_old.consumer), ("crm_new", crm_new.consumer)):
        started = await spawn_worker(f"tests.workers.{module}", consumer, METRICS_PORT="0")
        assert await started.stop() == 0
    await fill(bus, old.main, [f"w-{n}" for n in range(20)])
    await fill(bus, old.retry(1), [f"r-{n}" for n in range(5)])

    async def move(channel: Any, source: str, target: str, limit: int | None = None) -> int:
        if source == old.retry(1):
            await real_move(channel, source, old.main)  # expired meanwhile, into the main queue
        return await real_move(channel, source, target, limit)

    monkeypatch.setattr(prune, "move_messages", move)
    async with await aio_pika.connect(AMQP_URL) as connection:
        # Refusing is allowed; then the messages must still be there.
        with contextlib.suppress(prune.CannotRetire):
            await prune.retire(connection, bus.names, "crm-old", into="crm-sync", delete=True)
    arrived = {str(m.message_id) for m in await bus.drain(await bus.queue(new.main))}
    left = 0
    if await exists(old.main):
        left = len(await bus.drain(await bus.queue(old.main)))
    assert len(arrived) + left == 25
