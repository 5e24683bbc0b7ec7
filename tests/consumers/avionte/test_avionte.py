"""The Avionté API client against `consumers.testing.avionte_api`, which enforces the documented
protocol, then in workers."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consumers import Event
from consumers.avionte import (
    EVENTS,
    AvionteClient,
    AvionteRejected,
    AvionteUnavailable,
    EntityGone,
    EntityRef,
    UnmappedEvent,
    entity_of,
)
from consumers.avionte.limiter import WINDOW
from consumers.event import parse_resource
from consumers.testing import AvionteAPI, avionte_api
from consumers.testing.avionte import API_KEY, CLIENT_SECRET
from consumers.topology import ConsumerQueues
from service.shared.envelope import parse, routing_key
from service.shared.samples import KNOWN_EVENTS
from service.simulate import bodies
from tests.support import BusView, fixture_bodies
from tests.worker_processes import SpawnWorker, WorkerProcess
from tests.workers import fetcher

FIXTURES = fixture_bodies()
# What the API answers: each entity names its own id, as Avionté's do.
ENTITIES = {
    "placement": {n: {"PlacementId": n, "Status": "Active"} for n in (1, 9, 77, 86635)},
    "talent": {n: {"TalentId": n} for n in [*range(1, 21), *range(1000, 1030)]},
    "contact": {5: {"ContactId": 5}},
    "job": {3: {"JobId": 3}},
}


def event_of(body: bytes) -> Event:
    envelope = parse(body)
    return Event(
        name=envelope.event_name,
        routing_key=envelope.routing_key,
        tenant_id=envelope.tenant_id,
        message_id=envelope.message_id,
        correlation_id=envelope.correlation_id,
        resource=parse_resource(envelope.payload.get("Resource")),
        payload=envelope.payload,
        body=body,
        received_at=datetime.now(UTC),
        attempt=1,
        redelivered=False,
    )


def made(name: str, resource: dict[str, Any] | None, tenant: int | None = 6) -> Event:
    payload: dict[str, Any] = {"EventName": name, "CorrelationId": f"c-{name}"}
    if tenant is not None:
        payload["FrontOfficeTenantId"] = tenant
    if resource is not None:
        payload["Resource"] = json.dumps(resource)
    return event_of(json.dumps(payload).encode())


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("placement_updated", EntityRef("placement", 86635)),
        ("placement_started", EntityRef("placement", 86635)),
        ("talent_created", EntityRef("talent", 662)),
        ("talent_merged", EntityRef("talent", 662, other=942)),
        ("company_updated", EntityRef("company", 250271)),
        ("company_address_created", EntityRef("company", 250271)),
        ("contact_updated", EntityRef("contact", 86635)),
    ],
)
def test_every_sample_maps_to_its_entity(fixture: str, expected: EntityRef) -> None:
    assert entity_of(event_of(FIXTURES[fixture])) == expected


def test_documented_quirks_map_and_the_rest_is_a_clear_error() -> None:
    assert entity_of(made("VMS_job_created", {"JobId": 159640})) == EntityRef("job", 159640)
    assert entity_of(made("company_tag_added", {"CompanyId": 3})) == EntityRef("company", 3)
    back_office = event_of(json.dumps({"EventName": "AcmeTalentEvent", "TenantId": 4}).encode())
    for event, reason in [
        (back_office, "names no entity"),
        (made("talent_created", None), "carries no Resource"),
        (made("placement_updated", {"JobId": 1}), "has none of PlacementId$"),
        (made("branch_created", {"BranchId": 2}), "names no entity"),
        (made("skillpositions_saved", {"Id": 2}), "names no entity"),
    ]:
        with pytest.raises(UnmappedEvent, match=reason):
            entity_of(event)
    assert routing_key("VMS_job_created") == "vms.job.created"


def test_the_simulator_sends_the_ids_of_the_samples_and_each_maps_to_its_entity() -> None:
    def ids(event: Event) -> set[str]:
        return {field for field in event.resource or {} if field.endswith("Id")}

    generated = itertools.islice(bodies(KNOWN_EVENTS, None), len(KNOWN_EVENTS))
    simulated = {event.name: event for event in map(event_of, generated)}
    for sample in map(event_of, FIXTURES.values()):
        assert ids(simulated[sample.name]) == ids(sample), sample.name
    for event in simulated.values():
        if event.routing_key in EVENTS:
            assert entity_of(event).kind == EVENTS[event.routing_key][0]


@pytest.fixture
async def fake() -> AsyncIterator[AvionteAPI]:
    async with avionte_api(ENTITIES) as running:
        yield running


@pytest.fixture
async def client(fake: AvionteAPI) -> AsyncIterator[AvionteClient]:
    made_client = AvionteClient.from_env({**fake.env(), "AVIONTE_RATE_LIMIT": "100"})
    yield made_client
    await made_client.close()


async def test_a_fetch_sends_every_documented_header(
    fake: AvionteAPI, client: AvionteClient
) -> None:
    placement = await client.fetch(event_of(FIXTURES["placement_updated"]))
    assert placement == ENTITIES["placement"][86635]
    assert fake.problems == []
    [call] = fake.calls
    assert (call.path, call.tenant) == ("placement/86635", "6")


async def test_one_token_serves_many_calls_and_concurrent_first_calls(
    fake: AvionteAPI, client: AvionteClient
) -> None:
    events = [made("talent_saved", {"Id": n}) for n in range(1, 21)]
    await asyncio.gather(*(client.fetch(event) for event in events))  # twenty at once
    await asyncio.gather(*(client.fetch(event) for event in events))
    assert fake.token_requests == 1
    assert len({call.request_id for call in fake.calls}) == 40  # a fresh RequestId each


async def test_a_token_is_renewed_before_it_expires_and_after_a_401() -> None:
    async with avionte_api(ENTITIES) as fake:
        fake.token_seconds = 1
        client = AvionteClient.from_env(fake.env())
        try:
            event = made("contact_created", {"ContactId": 5})
            await client.fetch(event)
            await asyncio.sleep(1.0)  # within the last tenth of its life
            await client.fetch(event)
            assert fake.token_requests == 2
            fake.token_seconds = 3600
            await asyncio.sleep(1.0)
            await client.fetch(event)
            assert fake.token_requests == 3
            fake.revoke_all()  # Avionté revoked it: the next call gets 401, once
            await client.fetch(event)
            assert fake.token_requests == 4
            assert [c.path for c in fake.calls].count("contact/5") == 5  # one repeated
            assert fake.problems == []
        finally:
            await client.close()


async def test_failures_map_to_what_the_worker_does_with_them(
    fake: AvionteAPI, client: AvionteClient
) -> None:
    event = made("placement_updated", {"PlacementId": 9})
    fake.script("placement/9", (429, {"Retry-After": "2"}), 503, 400)
    with pytest.raises(AvionteUnavailable) as limited:
        await client.fetch(event)
    assert limited.value.after == 2
    with pytest.raises(AvionteUnavailable) as down:
        await client.fetch(event)
    assert down.value.after == 5  # Avionté's first back-off
    with pytest.raises(AvionteRejected):
        await client.fetch(event)
    del fake.entities["placement"]["9"]
    with pytest.raises(EntityGone):
        await client.fetch(event)
    with pytest.raises(AvionteRejected, match="no tenant"):
        await client.fetch(made("placement_updated", {"PlacementId": 9}, tenant=None))


async def test_a_slow_answer_is_a_retryable_timeout(fake: AvionteAPI) -> None:
    client = AvionteClient.from_env({**fake.env(), "AVIONTE_TIMEOUT": "0.5"})
    fake.slow["job/3"] = 2.0
    try:
        started = time.monotonic()
        with pytest.raises(AvionteUnavailable, match="TimeoutError"):
            await client.fetch(made("job_updated", {"JobId": 3}))
        assert time.monotonic() - started < 1.5
    finally:
        await client.close()


def test_secrets_stay_out_of_repr() -> None:
    client = AvionteClient.from_env(
        {
            "AVIONTE_CLIENT_ID": "id",
            "AVIONTE_CLIENT_SECRET": CLIENT_SECRET,
            "AVIONTE_API_KEY": API_KEY,
        }
    )
    assert CLIENT_SECRET not in repr(client) + repr(client.settings)
    assert API_KEY not in repr(client) + repr(client.settings)


# ----------------------------------------------------------------- with real workers


def fetched(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


async def until(condition: Any, within: float = 30) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.05)


def no_secret_in(worker: WorkerProcess, fake: AvionteAPI) -> None:
    text = worker.text()
    for secret in (CLIENT_SECRET, API_KEY, *fake.issued):
        assert secret not in text, "a secret or token reached the log"


@pytest.mark.rabbit
async def test_a_burst_of_thirty_events_keeps_the_rate_limit_with_one_token(
    bus: BusView, spawn_worker: SpawnWorker, fake: AvionteAPI, tmp_path: Path
) -> None:
    record = tmp_path / "fetched.jsonl"
    worker = await spawn_worker(
        "tests.workers.fetcher",
        fetcher.consumer,
        RECORD_FILE=str(record),
        METRICS_PORT="0",
        AVIONTE_RATE_LIMIT="10",
        **fake.env(),
    )
    for n in range(30):
        await bus.publish_event("talent_saved", Resource=json.dumps({"Id": 1000 + n}))
    started = time.monotonic()
    await until(lambda: len(fetched(record)) == 30)
    assert fake.busiest_second() <= 10
    assert time.monotonic() - started >= 2 * WINDOW - 0.5  # 30 at 10 a second: 3 windows
    assert fake.token_requests == 1  # sixteen handlers wanted it at once
    assert fake.problems == []
    assert await worker.stop() == 0
    no_secret_in(worker, fake)


@pytest.mark.rabbit
async def test_429_and_503_are_retried_into_a_fetch_and_404_dead_letters_at_once(
    bus: BusView, spawn_worker: SpawnWorker, fake: AvionteAPI, tmp_path: Path
) -> None:
    record = tmp_path / "fetched.jsonl"
    fake.script("placement/1", (429, {"Retry-After": "1"}), 503)
    worker = await spawn_worker(
        "tests.workers.fetcher",
        fetcher.consumer,
        RECORD_FILE=str(record),
        METRICS_PORT="0",
        **fake.env(),
    )
    recovers = await bus.publish_event("placement_updated", Resource='{"PlacementId": 1}')
    # Not in ENTITIES: Avionté answers 404.
    gone = await bus.publish_event("placement_updated", Resource='{"PlacementId": 2}')
    await until(lambda: len(fetched(record)) == 1)
    [line] = fetched(record)
    assert (line["message_id"], line["attempt"]) == (recovers, 3)
    dead = await bus.queue(ConsumerQueues(bus.names.prefix, "fetcher").dead)
    letter = await bus.get(dead, timeout=10)
    assert letter.message_id == gone
    assert (letter.headers["x-error-type"], letter.headers["x-attempts"]) == ("EntityGone", 1)
    assert await bus.drain(dead) == []
    attempts = [call.at for call in fake.for_path("placement/1")]
    assert attempts[1] - attempts[0] >= 1.0  # the Retry-After was honoured
    assert await worker.stop() == 0
    no_secret_in(worker, fake)


@pytest.mark.rabbit
@pytest.mark.parametrize("configured", [True, False], ids=["client", "offline"])
async def test_placement_sync_fetches_through_the_client_when_configured(
    bus: BusView, spawn_worker: SpawnWorker, fake: AvionteAPI, configured: bool
) -> None:
    from consumers import placement_sync

    env = fake.env() if configured else {}
    worker = await spawn_worker("placement_sync", placement_sync.consumer, METRICS_PORT="0", **env)
    await bus.publish_event("placement_updated", Resource='{"PlacementId": 77}')
    await until(lambda: bool(worker.events("placement synced")))
    [source] = worker.events("placement source")
    assert source["source"] == ("avionte" if configured else "offline")
    assert [call.path for call in fake.calls] == (["placement/77"] if configured else [])
    assert await worker.stop() == 0
    no_secret_in(worker, fake)
