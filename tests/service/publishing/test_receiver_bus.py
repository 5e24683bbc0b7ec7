"""The receiver against the real broker: what reaches the bus, and what never does."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aio_pika import DeliveryMode

from service.http.app import WEBHOOK_PATH
from tests.conftest import ReceiverFactory
from tests.support import AUTH_METHODS, BusView, auth_headers, fixture_bodies

pytestmark = pytest.mark.rabbit

# Written out from the contract's rules, not computed by the code under test.
EXPECTED_KEYS = {
    "company_address_created": "company.address.created",
    "company_updated": "company.updated",
    "contact_updated": "contact.updated",
    "placement_started": "placement.started",
    "placement_updated": "placement.updated",
    "talent_created": "talent.created",
    "talent_merged": "talent.merged",
}
EXPECTED_AUTH = {
    "api_key": "api_key",
    "shared_secret": "shared_secret",
    "hmac_hex": "hmac",
    "hmac_base64": "hmac",
}


@pytest.mark.parametrize("method", AUTH_METHODS)
async def test_every_fixture_arrives_intact(
    bus: BusView, start_receiver: ReceiverFactory, method: str
) -> None:
    client = await start_receiver()
    fixtures = fixture_bodies()
    assert set(fixtures) == set(EXPECTED_KEYS)
    delivery_ids = set()
    for stem, body in fixtures.items():
        queue = await bus.probe(EXPECTED_KEYS[stem])
        before = datetime.now(UTC).replace(microsecond=0)
        response = await client.post(WEBHOOK_PATH, data=body, headers=auth_headers(method, body))
        raw = json.loads(body)
        assert response.status == 200
        assert await response.json() == {"status": "accepted", "id": raw["CorrelationId"]}

        message = await bus.get(queue)
        assert message.body == body
        assert message.routing_key == EXPECTED_KEYS[stem]
        assert message.message_id == raw["CorrelationId"]
        assert message.type == raw["EventName"]
        assert message.delivery_mode == DeliveryMode.PERSISTENT
        assert message.content_type == "application/json"
        assert message.timestamp is not None
        assert before - timedelta(seconds=1) <= message.timestamp <= datetime.now(UTC)
        headers = message.headers
        assert set(headers) == {
            "x-event-name",
            "x-tenant-id",
            "x-received-at",
            "x-delivery-id",
            "x-auth",
        }
        assert headers["x-event-name"] == raw["EventName"]
        assert headers["x-tenant-id"] == raw["FrontOfficeTenantId"] == 6
        assert headers["x-auth"] == EXPECTED_AUTH[method]
        received = datetime.fromisoformat(str(headers["x-received-at"]))
        assert received.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= received <= datetime.now(UTC)
        delivery_ids.add(str(uuid.UUID(str(headers["x-delivery-id"]))))
        assert await bus.drain(queue) == []
    assert len(delivery_ids) == len(fixtures)


async def test_back_office_shape(bus: BusView, start_receiver: ReceiverFactory) -> None:
    client = await start_receiver()
    queue = await bus.probe("acme.talent.#")
    body = json.dumps(
        {"EventName": "AcmeTalentBenefitEligibleEvent", "TenantId": 42, "DeduplicationId": "d-1"}
    ).encode()
    response = await client.post(WEBHOOK_PATH, data=body, headers=auth_headers("hmac_hex", body))
    assert response.status == 200
    message = await bus.get(queue)
    assert message.routing_key == "acme.talent.benefit.eligible.event"
    assert message.message_id == "d-1"
    assert message.headers["x-tenant-id"] == 42


async def test_unbound_events_land_in_unrouted(
    bus: BusView, start_receiver: ReceiverFactory
) -> None:
    client = await start_receiver()
    body = json.dumps({"EventName": "VMS_job_declined", "FrontOfficeTenantId": 3}).encode()
    response = await client.post(WEBHOOK_PATH, data=body, headers=auth_headers("api_key", body))
    assert response.status == 200
    message = await bus.get(await bus.queue(bus.names.unrouted))
    assert message.body == body
    assert message.routing_key == "vms.job.declined"
    assert message.headers["x-event-name"] == "VMS_job_declined"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"this is not json", "not_json"),
        (b'[{"EventName": "talent_created"}]', "not_an_object"),
        (b'{"FrontOfficeTenantId": 6}', "no_event_name"),
    ],
)
async def test_unparseable_deliveries_are_quarantined(
    bus: BusView, start_receiver: ReceiverFactory, body: bytes, reason: str
) -> None:
    client = await start_receiver()
    response = await client.post(WEBHOOK_PATH, data=body, headers=auth_headers("hmac_base64", body))
    assert response.status == 200
    assert (await response.json())["status"] == "quarantined"
    message = await bus.get(await bus.queue(bus.names.invalid))
    assert message.body == body
    assert message.headers["x-invalid-reason"] == reason
    assert message.headers["x-auth"] == "hmac"
    assert message.delivery_mode == DeliveryMode.PERSISTENT
    assert await bus.drain(await bus.queue(bus.names.unrouted)) == []


async def test_refusals_publish_nothing(bus: BusView, start_receiver: ReceiverFactory) -> None:
    client = await start_receiver(max_body_bytes=4096)
    everything = await bus.probe("#")
    body = fixture_bodies()["placement_updated"]
    good = auth_headers("api_key", body)["X-api-key"]
    refused = [
        {},
        {"X-api-key": "not-a-key"},
        {"X-api-key": ""},
        {"X-Payload-Signature": ""},
        {"X-api-key": good.swapcase()},
        {"X-Payload-Signature": auth_headers("shared_secret", body)["X-Payload-Signature"].upper()},
        auth_headers("hmac_hex", body + b"\n"),
        auth_headers("hmac_base64", b'{"EventName": "talent_created"}'),
    ]
    for headers in refused:
        response = await client.post(WEBHOOK_PATH, data=body, headers=headers)
        assert response.status == 401, headers
    oversize = b'{"EventName": "talent_created", "Pad": "' + b"x" * 5000 + b'"}'
    response = await client.post(
        WEBHOOK_PATH, data=oversize, headers=auth_headers("api_key", oversize)
    )
    assert response.status == 413

    # A sentinel sent last: the broker routes in order, so anything published
    # before it would be ahead of it on the queue.
    sentinel = json.dumps({"EventName": "talent_saved", "CorrelationId": "sentinel"}).encode()
    response = await client.post(
        WEBHOOK_PATH, data=sentinel, headers=auth_headers("api_key", sentinel)
    )
    assert response.status == 200
    first = await bus.get(everything)
    assert first.message_id == "sentinel"
    assert await bus.drain(everything) == []
    assert await bus.drain(await bus.queue(bus.names.invalid)) == []
    assert await bus.drain(await bus.queue(bus.names.unrouted)) == []


async def test_rotation_accepts_both_values(bus: BusView, start_receiver: ReceiverFactory) -> None:
    client = await start_receiver()
    queue = await bus.probe("talent.created")
    sent = []
    for index in (0, 1):
        for method in AUTH_METHODS:
            correlation_id = str(uuid.uuid4())
            body = json.dumps({"EventName": "talent_created", "CorrelationId": correlation_id})
            headers = auth_headers(method, body.encode(), index=index)
            response = await client.post(WEBHOOK_PATH, data=body, headers=headers)
            assert response.status == 200
            sent.append(correlation_id)
    received = [(await bus.get(queue)).message_id for _ in sent]
    assert received == sent


async def test_topology_declaration_is_idempotent(
    bus: BusView, start_receiver: ReceiverFactory
) -> None:
    first, second = await asyncio.gather(start_receiver(), start_receiver())
    body = fixture_bodies()["contact_updated"]
    queue = await bus.probe("contact.updated")
    for client in (first, second):
        response = await client.post(WEBHOOK_PATH, data=body, headers=auth_headers("api_key", body))
        assert response.status == 200
    assert [m.body for m in (await bus.get(queue), await bus.get(queue))] == [body, body]
