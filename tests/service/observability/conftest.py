"""Fixtures for the tracing and logging tests."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

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


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """The suite's logging set back after a test that configures its own."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
