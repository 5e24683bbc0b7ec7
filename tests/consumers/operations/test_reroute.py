"""`consumers reroute`: unrouted events reach consumers bound since; the rest stay, once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support import AMQP_URL, BusView
from tests.worker_processes import SpawnWorker, run_cli
from tests.workers import crm_new

pytestmark = pytest.mark.rabbit


async def test_reroute_delivers_to_new_bindings_and_keeps_the_rest(
    bus: BusView, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    await bus.declare()
    early = [await bus.publish_event("placement_updated") for _ in range(3)]
    unbound = [await bus.publish_event("company_updated") for _ in range(2)]
    unrouted = await bus.queue(bus.names.unrouted)
    assert unrouted.declaration_result.message_count == 5

    record = tmp_path / "handled.txt"
    # A consumer of placement events is deployed after they arrived.
    await spawn_worker(
        "tests.workers.crm_new", crm_new.consumer, RECORD_FILE=str(record), METRICS_PORT="0"
    )
    env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix}
    code, out, err = await run_cli(env, "reroute", "--limit", "1")
    assert code == 0, err
    assert out.startswith(f"rerouted 1 event(s) from {bus.names.unrouted}")
    code, out, err = await run_cli(env, "reroute")
    assert code == 0, err
    assert f"rerouted 4 event(s) from {bus.names.unrouted} through {bus.names.events};" in out
    assert f"2 wait in {bus.names.unrouted} now" in out
    async with asyncio.timeout(10):
        while not record.exists() or len(record.read_text().split()) < 3:
            await asyncio.sleep(0.05)
    assert sorted(record.read_text().split()) == sorted(early)  # each once
    left = [str(m.message_id) for m in await bus.drain(await bus.queue(bus.names.unrouted))]
    assert sorted(left) == sorted(unbound)
