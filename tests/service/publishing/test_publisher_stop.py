"""Stopping the publisher while it connects."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import aiormq
import pytest

from service.publishing.publisher import AmqpPublisher
from service.shared.bus import BusNames


async def test_a_cancel_the_library_turns_into_a_connection_error_still_stops_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts = 0

    async def connect(*args: Any, **kwargs: Any) -> Any:
        # As aiormq may do when cancelled in its handshake: the cancel comes out as a
        # connection error. A supervisor that took it for one would connect again.
        nonlocal attempts
        attempts += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise aiormq.exceptions.AMQPConnectionError("cancelled in the handshake") from None

    monkeypatch.setattr(aio_pika, "connect", connect)
    publisher = AmqpPublisher(
        "amqp://guest:guest@127.0.0.1:5672/", BusNames("stop-test"), timeout=5
    )
    await publisher.start()
    while attempts == 0:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(publisher.close(), 5)
    assert attempts == 1
    assert publisher.state == "disconnected"
