"""Fixtures for the tracing tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.collector import Collector


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    """An OTLP/HTTP endpoint that keeps what it is sent."""
    running = Collector()
    await running.start()
    try:
        yield running
    finally:
        await running.close()
