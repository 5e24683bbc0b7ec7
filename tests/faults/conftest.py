"""Fixtures of the fault suite: a harness per scenario, cleaned up with the test's prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.faults.harness import Harness
from tests.support import AMQP_URL, API_KEYS, BusView, consumer_queue_names
from tests.workers import counter


@pytest.fixture
async def harness(bus: BusView, tmp_path: Path) -> AsyncIterator[Harness]:
    bus.forget_later(*consumer_queue_names(bus.names.prefix, counter.consumer))
    running = Harness(tmp_path, AMQP_URL, bus.names.prefix, API_KEYS[0])
    try:
        yield running
    finally:
        await running.close()
