"""A consumer name the bus does not know is a usage error for every command that takes one."""

from __future__ import annotations

import pytest

from consumers.topology import ConsumerQueues
from tests.conftest import WorkerFactory
from tests.support import AMQP_URL, BusView
from tests.worker_processes import run_cli
from tests.workers import crm_old

pytestmark = pytest.mark.rabbit


async def test_an_unknown_name_is_refused_with_the_known_ones(
    bus: BusView, run_worker: WorkerFactory
) -> None:
    await run_worker(crm_old.consumer)
    env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix}
    known = f"known consumers under {bus.names.prefix!r}: crm-old\n"
    for command in ("dead", "replay", "prune"):
        code, out, err = await run_cli(env, command, "crm-olf")
        assert (code, out) == (2, ""), command
        assert err == f"error: no consumer crm-olf\n{known}", command

    # A module stands for the consumers it defines; crm_new's has never run here.
    code, out, err = await run_cli(env, "dead", "tests.workers.crm_new")
    assert (code, err) == (2, f"error: no consumer crm-sync\n{known}")
    code, out, _ = await run_cli(env, "dead", "tests.workers.crm_old")
    assert code == 0
    assert out == f"{ConsumerQueues(bus.names.prefix, 'crm-old').dead}: 0 dead letter(s)\n"


async def test_prune_takes_a_name_the_registry_holds_though_its_queue_is_gone(
    bus: BusView, run_worker: WorkerFactory
) -> None:
    worker = await run_worker(crm_old.consumer)
    await worker.stop()
    queues = ConsumerQueues(bus.names.prefix, "crm-old")
    await bus.channel.queue_delete(queues.main)  # as a delete stopped half way leaves it
    env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix}
    code, _, err = await run_cli(env, "dead", "crm-old")
    assert code == 2
    assert err.startswith("error: no consumer crm-old: the registry names it, but there is no")

    code, _, err = await run_cli(env, "prune", "crm-old", "--delete")
    assert code == 0, err
    code, _, err = await run_cli(env, "prune", "crm-old")
    known = f"known consumers under {bus.names.prefix!r}: none\n"
    assert (code, err) == (2, f"error: no consumer crm-old\n{known}")
