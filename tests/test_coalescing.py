"""Identical deliveries in flight share one publish; the same id with other bytes does not."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from service.app import WEBHOOK_PATH
from tests.conftest import ReceiverFactory
from tests.support import API_KEYS, BusView

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
