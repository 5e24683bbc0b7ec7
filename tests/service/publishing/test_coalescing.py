"""Identical deliveries in flight share one publish; the same id with other bytes does not."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiormq import spec

from service.http.app import WEBHOOK_PATH
from service.publishing.publisher import AmqpPublisher, _Flight
from service.shared.bus import (
    AuthMethod,
    BusNames,
    Outgoing,
    Receipt,
    event_message,
    invalid_message,
)
from service.shared.envelope import parse
from tests.conftest import ReceiverFactory
from tests.receivers import SpawnReceiver
from tests.support import AMQP_URL, API_KEYS, BusView
from tests.tools.tcp_proxy import TcpProxy

pytestmark = pytest.mark.rabbit
HEADERS = {"X-api-key": API_KEYS[0]}


async def post_all(client: Any, bodies: list[bytes]) -> list[int]:
    async def one(body: bytes) -> int:
        response = await client.post(WEBHOOK_PATH, data=body, headers=HEADERS)
        return int(response.status)

    return list(await asyncio.gather(*(one(body) for body in bodies)))


async def test_sixty_four_copies_of_one_delivery_are_one_message(
    bus: BusView, start_receiver: ReceiverFactory
) -> None:
    client = await start_receiver()
    probe = await bus.probe("#")
    body = json.dumps({"EventName": "talent_created", "CorrelationId": "retried-1"}).encode()
    assert await post_all(client, [body] * 64) == [200] * 64
    first = await bus.get(probe)
    assert (first.message_id, first.body) == ("retried-1", body)
    await asyncio.sleep(0.5)
    later = await bus.drain(probe)
    # Copies that arrived after the first was confirmed are published again: never fewer.
    assert all(m.message_id == "retried-1" for m in later)
    assert len(later) < 32  # most of them (here, all) shared the first publish


async def test_one_id_with_other_bytes_is_published_as_sent(
    bus: BusView, start_receiver: ReceiverFactory
) -> None:
    client = await start_receiver()
    probe = await bus.probe("#")
    bodies = [
        json.dumps({"EventName": "talent_created", "CorrelationId": "reused-1", "N": n}).encode()
        for n in range(5)
    ]
    assert await post_all(client, bodies) == [200] * 5
    received = [await bus.get(probe) for _ in bodies]
    assert sorted(m.body for m in received) == sorted(bodies)
    assert await bus.drain(probe) == []


async def test_one_body_to_two_places_is_two_publishes(
    bus: BusView, spawn_receiver: SpawnReceiver
) -> None:
    # No CorrelationId: both get the body's digest as their id. Sent plain it is an
    # event; sent gzip-encoded it goes to quarantine (as `python -m service` serves it,
    # bodies are not decompressed). Neither may stand in for the other.
    receiver = await spawn_receiver()
    probe = await bus.probe("#")
    invalid = await bus.queue(bus.names.invalid)
    url = f"{receiver.url}{WEBHOOK_PATH}"
    async with aiohttp.ClientSession() as session:

        async def post(body: bytes, headers: dict[str, str]) -> str:
            async with session.post(url, data=body, headers=headers) as response:
                return str((await response.json())["status"])

        for n in range(20):
            body = json.dumps({"EventName": "talent_created", "N": n}).encode()
            encoded = {**HEADERS, "Content-Encoding": "gzip"}
            answers = await asyncio.gather(post(body, HEADERS), post(body, encoded))
            assert list(answers) == ["accepted", "quarantined"]
            event = await bus.get(probe)
            assert (event.body, event.routing_key) == (body, "talent.created")
            quarantined = await bus.get(invalid)
            assert quarantined.body == body
            assert (quarantined.headers or {})["x-invalid-reason"] == "content_encoding"


def test_copies_differ_only_in_their_receipt() -> None:
    body = json.dumps({"EventName": "talent_created", "CorrelationId": "c-1"}).encode()
    names = BusNames("p")

    def message(auth: AuthMethod, delivery: str) -> Outgoing:
        receipt = Receipt(delivery, auth, datetime.now(UTC))
        return event_message(names, parse(body), body, receipt)

    first = message(AuthMethod.API_KEY, "d-1")
    assert first.same_as(message(AuthMethod.HMAC, "d-2"))
    quarantined = invalid_message(
        names, body, "content_encoding", Receipt("d-3", AuthMethod.HMAC, datetime.now(UTC))
    )
    assert not first.same_as(quarantined)
    other_tenant = event_message(
        names,
        parse(
            json.dumps(
                {"EventName": "talent_created", "CorrelationId": "c-1", "FrontOfficeTenantId": 7}
            ).encode()
        ),
        body,
        Receipt("d-4", AuthMethod.API_KEY, datetime.now(UTC)),
    )
    assert not first.same_as(other_tenant)  # a header of its content differs


@pytest.mark.timeout(30)
async def test_an_answered_flight_of_the_same_id_not_yet_landed_is_not_waited_on(
    bus: BusView,
) -> None:
    """Its answer is in, its done callback not yet run: awaiting it does not yield.

    The publish used to wait on it in a loop that never let the callback run, and the
    whole receiver froze (seen as a pair of deliveries never answered).
    """
    publisher = AmqpPublisher(AMQP_URL, bus.names, timeout=3.0)
    await publisher.start()
    try:
        async with asyncio.timeout(10):
            while not publisher.ready:
                await asyncio.sleep(0.05)
        invalid = await bus.queue(bus.names.invalid)
        body = json.dumps({"EventName": "talent_created", "N": 1}).encode()
        receipt = Receipt("d-1", AuthMethod.API_KEY, datetime.now(UTC))
        event = event_message(bus.names, parse(body), body, receipt)
        quarantined = invalid_message(bus.names, body, "content_encoding", receipt)
        answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        answered.set_result(spec.Basic.Ack())
        deadline = asyncio.get_running_loop().time() + 3.0
        publisher._flights[event.message_id] = _Flight(event, answered, deadline)
        await publisher.publish(quarantined)
        assert (await bus.get(invalid)).body == body
    finally:
        await publisher.close()


@pytest.mark.timeout(60)
async def test_a_copy_whose_caller_stops_waiting_leaves_the_others_their_answer(
    bus: BusView, proxy: TcpProxy
) -> None:
    """A client that hangs up cancels its own wait, never the publish its copies share."""
    await bus.declare()
    probe = await bus.probe("#")
    publisher = AmqpPublisher(proxy.url_for(AMQP_URL), bus.names, timeout=20.0)
    await publisher.start()
    try:
        async with asyncio.timeout(10):
            while not publisher.ready:
                await asyncio.sleep(0.05)
        body = json.dumps({"EventName": "talent_created", "CorrelationId": "gone-1"}).encode()
        copies = [
            event_message(
                bus.names,
                parse(body),
                body,
                Receipt(f"d-{n}", AuthMethod.API_KEY, datetime.now(UTC)),
            )
            for n in range(3)
        ]
        proxy.stall()  # no confirm can come while the first caller goes
        waiting = [asyncio.create_task(publisher.publish(copy)) for copy in copies]
        await asyncio.sleep(0.3)
        assert not any(task.done() for task in waiting)
        waiting[0].cancel()
        await asyncio.sleep(0.1)
        proxy.resume()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert results[1:] == [None, None]  # both confirmed: stored
        got = await bus.get(probe)
        assert (got.message_id, got.body) == ("gone-1", body)
        await asyncio.sleep(0.5)
        assert await bus.drain(probe) == []  # one publish for the three
    finally:
        await publisher.close()
