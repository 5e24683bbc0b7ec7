"""Metrics scraped from a running receiver and a running worker after a scripted mix."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from consumers import Consumer, Event, Reject
from consumers.topology import ConsumerQueues
from service.http.app import WEBHOOK_PATH, create_app
from service.observability.metrics import MAX_ROUTING_KEYS, MAX_TENANTS
from tests.conftest import ReceiverFactory, WorkerFactory
from tests.fakes import MemoryPublisher
from tests.receivers import free_port
from tests.support import API_KEYS, BusView, auth_headers, receiver_settings

Client = TestClient[Any, Any]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


def event(name: str, n: int, **fields: Any) -> bytes:
    return json.dumps({"EventName": name, "CorrelationId": f"{name}-{n}", **fields}).encode()


LAST_ACCEPTED = "relay_last_accepted_timestamp_seconds"


def last_accepted(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> dict[str, float]:
    """The gauge's value by tenant."""
    return {
        dict(labels)["tenant"]: value
        for (name, labels), value in scrape.items()
        if name == LAST_ACCEPTED
    }


@pytest.mark.rabbit
async def test_receiver_counts_every_outcome(bus: BusView, start_receiver: ReceiverFactory) -> None:
    client = await start_receiver(max_body_bytes=2048)
    script: list[tuple[bytes, dict[str, str], int]] = [
        (event("talent_created", 1), {}, 200),
        (event("talent_created", 2), {}, 200),
        (event("placement_updated", 1), {}, 200),
        (b"not json", {}, 200),
        (b"[]", {}, 200),
        (event("talent_created", 3), {"X-api-key": "wrong"}, 401),
        (event("talent_created", 4), {"X-api-key": ""}, 401),
        (event("talent_created", 5), {"X-Payload-Signature": "wrong"}, 401),
        (b"{" + b" " * 3000 + b"}", {}, 413),
    ]
    for body, headers, status in script:
        sent = headers or auth_headers("api_key", body)
        assert (await client.post(WEBHOOK_PATH, data=body, headers=sent)).status == status
    await bus.channel.queue_delete(bus.names.unrouted)  # so the next one cannot be stored
    body = event("job_created", 1)
    response = await client.post(WEBHOOK_PATH, data=body, headers=auth_headers("api_key", body))
    assert response.status == 503

    scrape = samples(await (await client.get("/metrics")).text())
    total = "relay_deliveries_total"
    assert value(scrape, total, outcome="accepted", routing_key="talent.created") == 2
    assert value(scrape, total, outcome="accepted", routing_key="placement.updated") == 1
    assert value(scrape, total, outcome="quarantined", routing_key="none") == 2
    assert value(scrape, total, outcome="unauthorized", routing_key="none") == 3
    assert value(scrape, total, outcome="too_large", routing_key="none") == 1
    assert value(scrape, total, outcome="unavailable", routing_key="job.created") == 1
    assert value(scrape, "relay_store_seconds_count", stored="broker") == 5
    assert value(scrape, "relay_publishes_in_flight") == 0
    assert value(scrape, "relay_broker_connected") == 1


@pytest.mark.rabbit
async def test_worker_counts_every_outcome(bus: BusView, run_worker: WorkerFactory) -> None:
    consumer = Consumer("metered", retry_delays=(0.1,))
    settled: list[str] = []

    @consumer.on("talent_created")
    async def fine(event: Event) -> None:
        settled.append(event.message_id)

    @consumer.on("placement_updated")
    async def broken(event: Event) -> None:
        raise RuntimeError("downstream is down")

    @consumer.on("job_created")
    async def unwanted(event: Event) -> None:
        raise Reject("not ours")

    port = free_port()
    await run_worker(consumer, metrics_port=port)
    for n in range(2):
        await bus.publish_event("talent_created", CorrelationId=f"ok-{n}")
    await bus.publish_event("placement_updated", CorrelationId="fails")
    await bus.publish_event("job_created", CorrelationId="rejected")
    dead = await bus.queue(ConsumerQueues(bus.names.prefix, "metered").dead)
    async with asyncio.timeout(10):
        while (await bus.queue(dead.name)).declaration_result.message_count != 2:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    assert len(settled) == 2

    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            scrape = samples(await response.text())
        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
    total = "relay_consumer_messages_total"
    labels = {"consumer": "metered"}
    assert value(scrape, total, **labels, routing_key="talent.created", outcome="ok") == 2
    assert value(scrape, total, **labels, routing_key="placement.updated", outcome="retried") == 1
    assert value(scrape, total, **labels, routing_key="placement.updated", outcome="dead") == 1
    assert value(scrape, total, **labels, routing_key="job.created", outcome="rejected") == 1
    assert value(scrape, "relay_consumer_handle_seconds_count", **labels) == 5
    assert value(scrape, "relay_consumer_in_flight", **labels) == 0


@pytest.fixture
async def memory_receiver(receiver_client: Callable[..., Awaitable[Client]]) -> Client:
    """A receiver that stores in memory: no broker, for counting labels."""
    return await receiver_client(create_app(receiver_settings("unit"), publisher=MemoryPublisher()))


async def test_routing_key_labels_stay_capped(memory_receiver: Client) -> None:
    client = memory_receiver
    headers = {"X-api-key": API_KEYS[0]}
    for n in range(10_000):
        body = b'{"EventName": "made_up_event_%d"}' % n
        assert (await client.post(WEBHOOK_PATH, data=body, headers=headers)).status == 200
    scrape = samples(await (await client.get("/metrics")).text())
    keys = {
        dict(labels)["routing_key"]
        for (name, labels), _ in scrape.items()
        if name == "relay_deliveries_total"
    }
    assert len(keys) == MAX_ROUTING_KEYS + 1
    assert "other" in keys
    assert value(scrape, "relay_deliveries_total", outcome="accepted", routing_key="other") == (
        10_000 - MAX_ROUTING_KEYS
    )


@pytest.mark.rabbit
async def test_receiver_marks_the_last_accepted_delivery_per_tenant(
    bus: BusView, start_receiver: ReceiverFactory
) -> None:
    """Accepted deliveries set their tenant's time; nothing else moves it or adds a tenant."""
    client = await start_receiver()

    async def post(body: bytes, headers: dict[str, str] | None = None) -> int:
        sent = headers or auth_headers("api_key", body)
        return (await client.post(WEBHOOK_PATH, data=body, headers=sent)).status

    assert last_accepted(samples(await (await client.get("/metrics")).text())) == {}
    before = time.time()
    # Front office (FrontOfficeTenantId) and back office (TenantId, as a string) tenants.
    assert await post(event("placement_updated", 1, FrontOfficeTenantId=6)) == 200
    assert await post(event("TalentBenefitEvent", 1, TenantId="12")) == 200
    assert await post(event("placement_updated", 2, FrontOfficeTenantId=6)) == 200
    assert await post(event("job_created", 1)) == 200
    after = time.time()
    marked = last_accepted(samples(await (await client.get("/metrics")).text()))
    assert set(marked) == {"6", "12", "unknown"}
    assert all(before <= when <= after for when in marked.values()), marked

    await asyncio.sleep(0.01)
    # Rejected: a wrong key, a tenant never accepted before, a body that is quarantined.
    for tenant in (6, 12, 99):
        body = event("placement_updated", 10 + tenant, FrontOfficeTenantId=tenant)
        assert await post(body, {"X-api-key": "wrong"}) == 401
    assert await post(b"not json") == 200
    # Answered 503, never stored: not accepted either.
    await bus.channel.queue_delete(bus.names.unrouted)
    assert await post(event("placement_updated", 3, FrontOfficeTenantId=6)) == 503
    scrape = samples(await (await client.get("/metrics")).text())
    assert last_accepted(scrape) == marked
    total = "relay_deliveries_total"
    assert value(scrape, total, outcome="unauthorized", routing_key="none") == 3
    assert value(scrape, total, outcome="unavailable", routing_key="placement.updated") == 1


async def test_tenant_labels_stay_capped(memory_receiver: Client) -> None:
    client = memory_receiver
    headers = {"X-api-key": API_KEYS[0]}
    for tenant in range(MAX_TENANTS + 20):
        body = event("placement_updated", tenant, FrontOfficeTenantId=tenant)
        assert (await client.post(WEBHOOK_PATH, data=body, headers=headers)).status == 200
    before = time.time()
    body = event("placement_updated", 0, FrontOfficeTenantId=MAX_TENANTS + 1000)
    assert (await client.post(WEBHOOK_PATH, data=body, headers=headers)).status == 200
    marked = last_accepted(samples(await (await client.get("/metrics")).text()))
    assert len(marked) == MAX_TENANTS + 1
    assert set(marked) == {*map(str, range(MAX_TENANTS)), "other"}
    assert marked["other"] >= before, "a tenant past the cap moves `other`"
