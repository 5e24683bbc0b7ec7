"""Metrics scraped from a running receiver and a running worker after a scripted mix."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from consumers import Consumer, Event, Reject
from consumers.topology import ConsumerQueues
from service.http.app import WEBHOOK_PATH, create_app
from service.observability.metrics import MAX_ROUTING_KEYS
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


def event(name: str, n: int) -> bytes:
    return json.dumps({"EventName": name, "CorrelationId": f"{name}-{n}"}).encode()


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


async def test_routing_key_labels_stay_capped(
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await aiohttp_client(
        create_app(receiver_settings("unit"), publisher=MemoryPublisher())
    )
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
