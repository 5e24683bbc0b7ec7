"""The HTTP surface with an in-memory publisher: status codes, bodies and what gets published."""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.http.app import CONTEXT, WEBHOOK_PATH, create_app
from service.shared.errors import BrokerUnavailable, PublishNacked, PublishReturned, PublishTimeout
from tests.fakes import MemoryPublisher
from tests.support import API_KEYS, fixture_bodies, receiver_settings, status_line

Client = TestClient[Any, Any]
BODY = fixture_bodies()["talent_created"]


@pytest.fixture
def publisher() -> MemoryPublisher:
    return MemoryPublisher()


@pytest.fixture
async def client(
    receiver_client: Callable[..., Awaitable[Client]], publisher: MemoryPublisher
) -> Client:
    settings = receiver_settings("unit", max_body_bytes=1024)
    return await receiver_client(create_app(settings, publisher=publisher))


async def test_accepted_answers_with_the_message_id(
    client: Client, publisher: MemoryPublisher
) -> None:
    response = await client.post(WEBHOOK_PATH, data=BODY, headers={"X-api-key": API_KEYS[0]})
    assert response.status == 200
    assert await response.json() == {
        "status": "accepted",
        "id": "5d0c1e8e-3c55-4a55-9d2f-0b7f3f2a1c01",
    }
    [message] = publisher.published
    assert (message.exchange, message.routing_key, message.body) == (
        "unit.events",
        "talent.created",
        BODY,
    )


async def test_refusals_look_alike(client: Client, publisher: MemoryPublisher) -> None:
    bodies = set()
    for headers in ({}, {"X-api-key": "wrong"}, {"X-Payload-Signature": "wrong"}):
        response = await client.post(WEBHOOK_PATH, data=BODY, headers=headers)
        assert response.status == 401
        bodies.add(await response.read())
    assert bodies == {b'{"status":"unauthorized"}'}
    assert publisher.published == []


async def test_declared_oversize_is_refused_before_reading(
    client: Client, publisher: MemoryPublisher
) -> None:
    # The declared length is over the limit and the body never comes: a 413 proves
    # the receiver answered from the header alone.
    request = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nX-api-key: {API_KEYS[0]}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
    )
    server = client.server
    assert server.port is not None
    answer = await status_line(server.host, server.port, request.encode())
    assert answer.startswith(b"HTTP/1.1 413")
    assert publisher.published == []


async def test_chunked_oversize_is_refused(client: Client, publisher: MemoryPublisher) -> None:
    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 512

    response = await client.post(WEBHOOK_PATH, data=chunks(), headers={"X-api-key": API_KEYS[0]})
    assert response.status == 413
    assert publisher.published == []


async def test_body_at_the_limit_is_accepted(client: Client, publisher: MemoryPublisher) -> None:
    body = b'{"EventName":"talent_saved","Pad":"' + b"p" * (1024 - 37) + b'"}'
    assert len(body) == 1024
    response = await client.post(WEBHOOK_PATH, data=body, headers={"X-api-key": API_KEYS[0]})
    assert response.status == 200
    assert len(publisher.published) == 1


@pytest.mark.parametrize(
    "failure", [BrokerUnavailable(), PublishTimeout(), PublishNacked(), PublishReturned()]
)
async def test_unconfirmed_publish_is_a_503_with_retry_after(
    client: Client, publisher: MemoryPublisher, failure: Exception
) -> None:
    publisher.failure = failure  # type: ignore[assignment]
    response = await client.post(WEBHOOK_PATH, data=BODY, headers={"X-api-key": API_KEYS[0]})
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"


async def test_unparseable_body_is_quarantined(client: Client, publisher: MemoryPublisher) -> None:
    response = await client.post(WEBHOOK_PATH, data=b"[]", headers={"X-api-key": API_KEYS[0]})
    assert response.status == 200
    assert (await response.json())["status"] == "quarantined"
    [message] = publisher.published
    assert (message.exchange, message.routing_key) == ("", "unit.invalid")
    assert message.properties.headers is not None
    assert message.properties.headers["x-invalid-reason"] == "not_an_object"


async def test_probes(client: Client, publisher: MemoryPublisher) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    publisher.ready = False
    response = await client.get("/readyz")
    assert response.status == 503
    assert await response.json() == {
        "status": "not_ready",
        "broker": "disconnected",
        "spool": None,
        "shutting_down": False,
    }
    assert (await client.get("/healthz")).status == 200


async def test_shutdown_turns_not_ready_then_closes_intake(
    client: Client, publisher: MemoryPublisher
) -> None:
    lifecycle = client.app[CONTEXT].lifecycle
    lifecycle.shutting_down = True
    assert (await client.get("/readyz")).status == 503
    # During the grace period deliveries are still taken.
    response = await client.post(WEBHOOK_PATH, data=BODY, headers={"X-api-key": API_KEYS[0]})
    assert response.status == 200
    lifecycle.intake_closed = True
    response = await client.post(WEBHOOK_PATH, data=BODY, headers={"X-api-key": API_KEYS[0]})
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    assert len(publisher.published) == 1


async def test_encoded_bodies_are_quarantined(client: Client, publisher: MemoryPublisher) -> None:
    headers = {"X-api-key": API_KEYS[0], "Content-Encoding": "gzip"}
    response = await client.post(WEBHOOK_PATH, data=gzip.compress(BODY), headers=headers)
    assert response.status == 200
    assert (await response.json())["status"] == "quarantined"
    [message] = publisher.published
    assert message.properties.headers is not None
    assert message.properties.headers["x-invalid-reason"] == "content_encoding"
    unauthenticated = {"Content-Encoding": "gzip"}
    response = await client.post(WEBHOOK_PATH, data=gzip.compress(BODY), headers=unauthenticated)
    assert response.status == 401


async def test_a_crash_in_parsing_still_quarantines(
    client: Client, publisher: MemoryPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(body: bytes) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr("service.shared.envelope.parse", broken)
    response = await client.post(WEBHOOK_PATH, data=BODY, headers={"X-api-key": API_KEYS[0]})
    assert response.status == 200
    [message] = publisher.published
    assert message.properties.headers is not None
    assert message.properties.headers["x-invalid-reason"] == "parse_error"


async def test_the_app_owns_the_publisher_lifetime(
    receiver_client: Callable[..., Awaitable[Client]], publisher: MemoryPublisher
) -> None:
    client = await receiver_client(create_app(receiver_settings("unit"), publisher=publisher))
    assert publisher.started
    await client.close()
    assert publisher.closed


async def test_other_methods_and_paths(client: Client) -> None:
    assert (await client.get(WEBHOOK_PATH)).status == 405
    assert (await client.post("/webhooks/other", data=BODY)).status == 404
