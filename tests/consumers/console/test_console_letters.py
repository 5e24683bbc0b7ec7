"""Reading held queues for the console: nothing lost, nothing reordered, nothing counted.

Under a `delivery-limit` of 1 (which drops a message handed back twice), a queue is
listed, paged and searched again and again, and keeps every letter in its order.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from pamqp.common import FieldTable

from consumers.console.letters import Filter, act, find, listing
from tests.support import AMQP_URL, BusView
from tests.tools.policies import policy

pytestmark = pytest.mark.rabbit

COUNT = 300


@pytest.fixture
async def channel() -> AsyncIterator[AbstractChannel]:
    """A channel with publisher confirms, as the console sweeps with."""
    async with await aio_pika.connect(AMQP_URL) as connection:
        yield await connection.channel(publisher_confirms=True, on_return_raises=True)


async def fill(bus: BusView, channel: AbstractChannel, queue: str, count: int) -> list[str]:
    await bus.channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
    bus.forget_later(queue)
    ids = [f"letter-{n:05d}" for n in range(count)]
    for n, message_id in enumerate(ids):
        headers: FieldTable = {
            "x-event-name": "talent_created" if n % 3 else "placement_updated",
            "x-error-type": "Reject" if n % 2 else "HTTPError",
            "x-last-failure-at": f"2026-12-01T10:{n // 60:02d}:{n % 60:02d}Z",
        }
        await channel.default_exchange.publish(
            aio_pika.Message(
                b'{"EventName": "talent_created"}', message_id=message_id, headers=headers
            ),
            routing_key=queue,
        )
    return ids


async def order(bus: BusView, queue: str) -> list[str]:
    """The message ids in `queue`, in order, taken out for good."""
    return [m.message_id or "" for m in await bus.drain(await bus.queue(queue))]


async def test_listing_paging_and_finding_keep_every_letter_in_order(
    bus: BusView, channel: AbstractChannel
) -> None:
    queue = f"{bus.names.prefix}.held.dead"
    ids = await fill(bus, channel, queue, COUNT)
    with policy(f"^{re.escape(queue)}$", {"delivery-limit": 1}, queue=queue):
        first = await listing(channel, queue, Filter(), 0, 50)
        assert (first.total, first.matching) == (COUNT, COUNT)
        assert [letter.message_id for letter in first.letters] == ids[::-1][:50]  # newest first
        third = await listing(channel, queue, Filter(), 2, 50)
        assert [letter.message_id for letter in third.letters] == ids[::-1][100:150]
        rejects = await listing(channel, queue, Filter(error_type="Reject"), 0, 1000)
        assert [letter.message_id for letter in rejects.letters] == ids[1::2][::-1]
        assert rejects.error_types == {"Reject": COUNT // 2, "HTTPError": COUNT // 2}
        found = await find(channel, queue, first.letters[7].key)
        assert found is not None
        assert found.message_id == ids[-8]
        for _ in range(3):
            await listing(channel, queue, Filter(), 0, 10)
        assert await order(bus, queue) == ids


async def test_acting_on_one_letter_leaves_the_others_in_order(
    bus: BusView, channel: AbstractChannel
) -> None:
    queue = f"{bus.names.prefix}.held.dead"
    target = f"{bus.names.prefix}.held"
    await bus.channel.declare_queue(target, durable=True, arguments={"x-queue-type": "quorum"})
    bus.forget_later(target)
    ids = await fill(bus, channel, queue, 20)
    page = await listing(channel, queue, Filter(), 0, 20)
    chosen = next(letter for letter in page.letters if letter.message_id == ids[5])
    assert await act(channel, queue, ("move", target), key=chosen.key) == 1
    assert await act(channel, queue, ("move", target), key=chosen.key) == 0  # gone already
    dropped = next(letter for letter in page.letters if letter.message_id == ids[9])
    assert await act(channel, queue, "drop", key=dropped.key) == 1
    moved = await act(
        channel, queue, ("move", target), chosen=Filter(event_name="placement_updated")
    )
    placement = [i for n, i in enumerate(ids) if n % 3 == 0 and n not in (5, 9)]
    assert moved == len(placement)
    assert await order(bus, target) == [ids[5], *placement]
    assert await order(bus, queue) == [
        i for n, i in enumerate(ids) if n not in (5, 9) and i not in placement
    ]


async def test_a_long_queue_is_listed_in_one_pass_with_one_page_in_memory(
    bus: BusView, channel: AbstractChannel
) -> None:
    queue = f"{bus.names.prefix}.long.dead"
    ids = await fill(bus, channel, queue, 3000)
    started = time.monotonic()
    page = await listing(channel, queue, Filter(), 0, 50)
    seconds = time.monotonic() - started
    print(f"\nlisted {page.total} letters in {seconds:.2f} s ({page.total / seconds:.0f}/s)")
    assert page.total == 3000
    assert len(page.letters) == 50
    assert await order(bus, queue) == ids
