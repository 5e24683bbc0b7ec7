"""Tenant filters: a handler runs for its tenants only; the rest are acked and counted."""

from __future__ import annotations

import asyncio

import pytest

from consumers import Consumer, Event
from consumers.cli import main
from consumers.errors import RegistrationError
from consumers.topology import ConsumerQueues
from tests.conftest import RunningWorker, WorkerFactory
from tests.support import BusView
from tests.workers import tenants


async def noop(event: Event) -> None:
    return None


@pytest.mark.parametrize("bad", [[], "6", [True], [6, "12"], [None]])
def test_a_tenant_filter_must_name_integer_tenants(bad: object) -> None:
    with pytest.raises(RegistrationError, match="tenants must"):
        Consumer("x").on("#", tenants=bad)(noop)  # type: ignore[arg-type]


@pytest.mark.rabbit
async def test_other_tenants_are_acked_without_the_handler_and_counted(
    bus: BusView, run_worker: WorkerFactory
) -> None:
    tenants.handled.clear()
    worker = await run_worker(tenants.consumer)
    wanted = [
        await bus.publish_event("placement_updated", FrontOfficeTenantId=6),
        await bus.publish_event("placement_updated", FrontOfficeTenantId=12),
    ]
    for other in (7, None, 66):
        await bus.publish_event("placement_updated", FrontOfficeTenantId=other)
    async with asyncio.timeout(10):
        while _count(worker, "filtered") < 3:
            await asyncio.sleep(0.05)
    assert sorted(tenants.handled) == sorted(zip(wanted, (6, 12), strict=True))
    assert _count(worker, "ok") == 2
    queues = ConsumerQueues(bus.names.prefix, tenants.consumer.name)
    for queue in (queues.main, queues.dead):
        assert (await bus.queue(queue)).declaration_result.message_count == 0


def _count(running: RunningWorker, outcome: str) -> float:
    value = running.worker.metrics.registry.get_sample_value(
        "relay_consumer_messages_total",
        {"consumer": "two-tenants", "routing_key": "placement.updated", "outcome": outcome},
    )
    return float(value or 0)


def test_list_shows_the_filter(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    monkeypatch.setattr("consumers.cli.configure_logging", lambda *a, **k: None)
    monkeypatch.setenv("BUS_PREFIX", prefix)
    assert main(["list", "tests.workers.tenants"]) == 0
    assert "placement.updated  tenants 6, 12  ->  sync" in capsys.readouterr().out
