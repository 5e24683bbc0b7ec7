"""A replayed dead letter says how many times it was replayed, and starts its attempts afresh."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from consumers import Consumer, Event
from consumers.event import REPLAYS, TRACEBACK
from consumers.operations.dead import move_messages
from consumers.topology import ConsumerQueues
from tests.conftest import WorkerFactory
from tests.support import AMQP_URL, BusView
from tests.worker_processes import run_cli

pytestmark = pytest.mark.rabbit


async def test_a_letter_replayed_twice_that_fails_again_says_so(
    bus: BusView, run_worker: WorkerFactory
) -> None:
    consumer = Consumer("replayed", retry_delays=(0.1,))
    attempts: list[tuple[int, int | None]] = []

    @consumer.on("contact_updated")
    async def handle(event: Event) -> None:
        attempts.append((event.attempt, event.headers.get(REPLAYS)))
        raise RuntimeError(f"the CRM is down (try {len(attempts)})")

    queues = ConsumerQueues(bus.names.prefix, consumer.name)
    await run_worker(consumer)
    sent = await bus.publish_event("contact_updated")
    env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix}

    async def dead_again(tries: int) -> None:
        async with asyncio.timeout(20):
            while (
                len(attempts) < tries
                or (await bus.queue(queues.dead)).declaration_result.message_count != 1
            ):
                await asyncio.sleep(0.05)

    await dead_again(2)
    for replay in (1, 2):
        code, out, _ = await run_cli(env, "replay", consumer.name)
        assert (code, out.split(" dead")[0]) == (0, "replayed 1")
        await dead_again(2 + 2 * replay)

    # Each run started over at attempt 1, and the handler saw how often it was replayed.
    assert attempts == [(1, None), (2, None), (1, 1), (2, 1), (1, 2), (2, 2)]
    letter = await bus.get(await bus.queue(queues.dead))
    assert letter.message_id == sent
    headers = letter.headers
    assert headers[REPLAYS] == 2
    assert headers["x-attempts"] == 2  # this run's, not all six
    assert headers["x-error-message"] == "the CRM is down (try 6)"
    assert str(headers[TRACEBACK]).endswith("RuntimeError: the CRM is down (try 6)")

    # Moving a message (as `prune --into` does) is no replay: the count stays.
    await bus.channel.default_exchange.publish(
        aio_pika.Message(letter.body, headers=headers, message_id=letter.message_id),
        routing_key=queues.dead,
    )
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        bus.forget_later(f"{queues.dead}.moved")
        await channel.declare_queue(f"{queues.dead}.moved", durable=True)
        assert await move_messages(channel, queues.dead, f"{queues.dead}.moved") == 1
        moved = await bus.get(await bus.queue(f"{queues.dead}.moved"))
    assert moved.headers[REPLAYS] == 2
    assert TRACEBACK not in moved.headers
    assert "x-attempts" not in moved.headers
