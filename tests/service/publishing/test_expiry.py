"""Each publish without a confirm fails at its own deadline: its arrival plus PUBLISH_TIMEOUT."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from service.publishing.publisher import AmqpPublisher
from service.shared.bus import AuthMethod, Outgoing, Receipt, event_message
from service.shared.envelope import parse
from service.shared.errors import PublishTimeout
from tests.support import AMQP_URL, BusView
from tests.tools.tcp_proxy import TcpProxy

pytestmark = pytest.mark.rabbit
TIMEOUT = 1.0
# Timers fire on the loop's next pass after their time; more than this would be a miss.
LATE = 0.25


def event(bus: BusView, correlation_id: str, n: int = 0) -> Outgoing:
    body = json.dumps(
        {"EventName": "talent_created", "CorrelationId": correlation_id, "N": n}
    ).encode()
    receipt = Receipt(f"d-{correlation_id}-{n}", AuthMethod.API_KEY, datetime.now(UTC))
    return event_message(bus.names, parse(body), body, receipt)


@pytest.fixture
async def publisher(bus: BusView, proxy: TcpProxy) -> AsyncIterator[AmqpPublisher]:
    await bus.declare()
    publisher = AmqpPublisher(proxy.url_for(AMQP_URL), bus.names, timeout=TIMEOUT)
    await publisher.start()
    try:
        async with asyncio.timeout(10):
            while not publisher.ready:
                await asyncio.sleep(0.05)
        yield publisher
    finally:
        await publisher.close()


async def timed(publisher: AmqpPublisher, message: Outgoing, after: float) -> float:
    """Publish `message` `after` seconds from now; how long it took to fail with a timeout."""
    await asyncio.sleep(after)
    started = time.monotonic()
    with pytest.raises(PublishTimeout):
        await publisher.publish(message)
    return time.monotonic() - started


@pytest.mark.timeout(60)
async def test_publishes_that_arrive_apart_each_fail_at_their_own_deadline(
    bus: BusView, proxy: TcpProxy, publisher: AmqpPublisher
) -> None:
    await publisher.publish(event(bus, "before"))  # the link works
    proxy.stall()
    took = await asyncio.gather(
        *(timed(publisher, event(bus, f"apart-{n}"), 0.3 * n) for n in range(4))
    )
    for each in took:
        assert TIMEOUT - 0.02 <= each < TIMEOUT + LATE
    assert not publisher._expiring  # nothing is kept once answered


@pytest.mark.timeout(60)
async def test_one_that_waited_behind_its_id_fails_at_its_own_deadline(
    bus: BusView, proxy: TcpProxy, publisher: AmqpPublisher
) -> None:
    """Its own publish starts late, with a deadline before those of later arrivals."""
    await publisher.publish(event(bus, "before"))
    proxy.stall()
    first, behind, later = await asyncio.gather(
        timed(publisher, event(bus, "shared", 1), 0.0),
        # The same id with other bytes: it waits for the first, then publishes itself.
        timed(publisher, event(bus, "shared", 2), 0.1),
        # Another id, whose deadline comes after the waiting one's.
        timed(publisher, event(bus, "other"), 0.5),
    )
    for each in (first, behind, later):
        assert TIMEOUT - 0.02 <= each < TIMEOUT + LATE
    assert not publisher._expiring


@pytest.mark.timeout(60)
async def test_confirmed_publishes_are_not_kept_and_later_ones_still_expire(
    bus: BusView, proxy: TcpProxy, publisher: AmqpPublisher
) -> None:
    await asyncio.gather(*(publisher.publish(event(bus, f"kept-{n}")) for n in range(200)))
    assert not publisher._expiring  # each left as its confirm came
    await asyncio.sleep(TIMEOUT + LATE)  # the deadline watch runs with nothing to watch
    proxy.stall()
    took = await timed(publisher, event(bus, "after"), 0.0)
    assert TIMEOUT - 0.02 <= took < TIMEOUT + LATE
