"""Fixtures: an isolated bus prefix per test, a view of the bus, and in-process receivers."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from service.app import create_app
from service.logs import configure_logging
from tests.support import AMQP_URL, BusView, open_bus, receiver_settings

ReceiverFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def pytest_configure(config: pytest.Config) -> None:
    configure_logging("debug", "json")


@pytest.fixture(scope="session")
def broker_reachable() -> None:
    """Fail, never skip, when the broker the bus tests need is not there."""
    url = URL(AMQP_URL)
    try:
        socket.create_connection((url.host or "127.0.0.1", url.port or 5672), timeout=3).close()
    except OSError as exc:
        pytest.fail(
            f"RabbitMQ is not reachable at {url.host}:{url.port} ({exc}); `make test` starts it"
        )


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def bus(broker_reachable: None, prefix: str) -> AsyncIterator[BusView]:
    connection, view = await open_bus(prefix)
    try:
        yield view
    finally:
        await view.remove_all()
        await connection.close()


@pytest.fixture
def start_receiver(aiohttp_client: Any, bus: BusView) -> ReceiverFactory:
    """Start an in-process receiver on the test's prefix and wait until it is ready."""

    async def start(**overrides: Any) -> TestClient[Any, Any]:
        settings = receiver_settings(bus.names.prefix, **overrides)
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
        async with asyncio.timeout(10):
            while (await client.get("/readyz")).status != 200:
                await asyncio.sleep(0.05)
        return client

    return start
