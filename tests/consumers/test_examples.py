"""The example consumers, run by a real worker against the real broker."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from consumers import Event, audit_log, placement_sync
from consumers.avionte import entity_of
from consumers.topology import ConsumerQueues
from service.http.app import WEBHOOK_PATH
from service.shared.envelope import routing_key
from service.shared.samples import KNOWN_EVENTS
from service.simulate import bodies
from tests.conftest import WorkerFactory
from tests.receivers import SpawnReceiver
from tests.support import API_KEYS, BusView
from tests.worker_processes import SpawnWorker

pytestmark = pytest.mark.rabbit


async def test_audit_log_appends_one_line_per_event(
    bus: BusView, run_worker: WorkerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_log.record, "directory", tmp_path)
    await run_worker(audit_log.consumer)
    sent = [
        await bus.publish_event(name, CorrelationId=f"audit-{name}")
        for name in ("talent_created", "company_updated", "AcmeBenefitEvent")
    ]
    day = tmp_path / f"{datetime.now(UTC):%Y-%m-%d}.jsonl"
    async with asyncio.timeout(10):
        while not day.exists() or len(day.read_text().splitlines()) < len(sent):
            await asyncio.sleep(0.05)
    lines = [json.loads(line) for line in day.read_text().splitlines()]
    assert sorted(line["message_id"] for line in lines) == sorted(sent)
    by_id = {line["message_id"]: line for line in lines}
    assert by_id["audit-AcmeBenefitEvent"]["routing_key"] == "acme.benefit.event"
    assert by_id["audit-talent_created"]["payload"]["EventName"] == "talent_created"
    assert by_id["audit-talent_created"]["tenant_id"] == 6


class FakeAvionte:
    """Answers placements from memory and remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[int | None, int]] = []

    async def fetch(self, event: Event) -> dict[str, Any]:
        placement_id = entity_of(event).id
        self.calls.append((event.tenant_id, placement_id))
        return {"PlacementId": placement_id, "Status": "Active"}


async def test_placement_sync_fetches_once_per_message_and_rejects_what_it_cannot_use(
    bus: BusView,
    run_worker: WorkerFactory,
    monkeypatch: pytest.MonkeyPatch,
    dedupe_database: str,
) -> None:
    fake = FakeAvionte()
    monkeypatch.setattr(placement_sync.sync, "client", fake)
    await run_worker(placement_sync.consumer, concurrency=1, dedupe_url=dedupe_database)

    resource = json.dumps({"PlacementId": 86635, "PlacementExtensionId": 86635})
    await bus.publish_event("placement_updated", CorrelationId="p-1", Resource=resource)
    await bus.publish_event("placement_updated", CorrelationId="p-1", Resource=resource)
    extension = json.dumps({"PlacementId": 4242})
    await bus.publish_event("placement_extension_deleted", CorrelationId="p-2", Resource=extension)
    await bus.publish_event("placement_started", CorrelationId="p-3", Resource='{"JobId": 1}')

    dead_queue = await bus.queue(ConsumerQueues(bus.names.prefix, "placement-sync").dead)
    dead = await bus.get(dead_queue, timeout=10)
    assert dead.message_id == "p-3"
    assert dead.headers["x-error-type"] == "Reject"
    await asyncio.sleep(0.3)
    assert fake.calls == [(6, 86635), (6, 4242)]


async def test_audit_log_writes_every_event_the_receiver_accepted(
    bus: BusView, spawn_receiver: SpawnReceiver, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    """Nested deeper than orjson serialises (about 255), as the receiver accepts (1,023)."""
    receiver = await spawn_receiver()
    await spawn_worker(
        "audit_log", audit_log.consumer, AUDIT_LOG_DIR=str(tmp_path), METRICS_PORT="0"
    )
    deep: Any = "bottom"
    for _ in range(300):
        deep = [deep]
    body = json.dumps({"EventName": "talent_created", "CorrelationId": "deep-1", "Deep": deep})
    pretty = json.dumps({"EventName": "talent_saved", "CorrelationId": "pretty-1"}, indent=2)
    async with aiohttp.ClientSession() as session:
        for sent in (body, pretty):
            async with session.post(
                receiver.url + WEBHOOK_PATH, data=sent, headers={"X-api-key": API_KEYS[0]}
            ) as response:
                assert response.status == 200
    day = tmp_path / f"{datetime.now(UTC):%Y-%m-%d}.jsonl"
    async with asyncio.timeout(15):
        while not day.exists() or len(day.read_text().splitlines()) < 2:
            await asyncio.sleep(0.05)
    lines = {line["message_id"]: line for line in map(json.loads, day.read_text().splitlines())}
    assert lines["deep-1"]["payload"] == json.loads(body)
    assert lines["pretty-1"]["payload"] == json.loads(pretty)  # one line, though sent on six
    dead = await bus.queue(ConsumerQueues(bus.names.prefix, "audit-log").dead)
    assert dead.declaration_result.message_count == 0


async def test_placement_sync_without_a_dedupe_store_runs_every_delivery(
    bus: BusView, run_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeAvionte()
    monkeypatch.setattr(placement_sync.sync, "client", fake)
    await run_worker(placement_sync.consumer, concurrency=1)
    resource = json.dumps({"PlacementId": 7})
    for _ in range(2):
        await bus.publish_event("placement_updated", CorrelationId="twice", Resource=resource)
    async with asyncio.timeout(10):
        while len(fake.calls) < 2:
            await asyncio.sleep(0.05)
    assert fake.calls == [(6, 7), (6, 7)]  # at least once: the handler must be idempotent


async def test_every_event_the_simulator_sends_is_synced_and_none_dead_lettered(
    bus: BusView, run_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeAvionte()
    monkeypatch.setattr(placement_sync.sync, "client", fake)
    await run_worker(placement_sync.consumer)
    routed = 0
    for body in itertools.islice(bodies(KNOWN_EVENTS, None), len(KNOWN_EVENTS)):
        payload = json.loads(body)
        name = payload.pop("EventName")
        await bus.publish_event(name, **payload)
        routed += bool(placement_sync.consumer.handlers_for(routing_key(name)))
    assert routed == 3  # placement_started, placement_updated, placement_extension_deleted
    dead = ConsumerQueues(bus.names.prefix, "placement-sync").dead

    async def dead_letters() -> int:
        return (await bus.queue(dead)).declaration_result.message_count or 0

    async with asyncio.timeout(10):
        while len(fake.calls) + await dead_letters() < routed:
            await asyncio.sleep(0.05)
    assert await dead_letters() == 0
    assert len(fake.calls) == routed
