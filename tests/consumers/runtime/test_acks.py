"""A consumer channel's acks, gathered into `multiple` acks, on the real broker.

A `multiple` ack settles every tag up to its own on the channel, so the property that
matters is what it must never do: settle a message still in its handler, or one nacked
to go back. Each test ends by dropping the connection: whatever the broker still holds
for the channel comes back, and must be exactly the messages never acked.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelInvalidStateError

from consumers.runtime import acks as acks_module
from consumers.runtime.acks import Acks
from tests.support import AMQP_URL

COUNT = 60


@pytest.fixture
async def queue(prefix: str) -> AsyncIterator[tuple[aio_pika.abc.AbstractConnection, str]]:
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    name = f"{prefix}.acks"
    declared = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    for number in range(COUNT):
        await channel.default_exchange.publish(
            aio_pika.Message(str(number).encode(), message_id=str(number)), routing_key=name
        )
    try:
        yield connection, name
    finally:
        await declared.delete(if_unused=False, if_empty=False)
        await connection.close()


async def _consume_until(
    name: str, handle: object, finished: Callable[[], bool]
) -> list[tuple[bool, int]]:
    """Consume `name` with `handle` until `finished()`, then drop the connection.

    Returns each ack frame the window sent: whether `multiple`, and how many tags.
    """
    sends: list[tuple[bool, int]] = []
    original = acks_module.Acks._send

    async def counting(self: Acks, ready: Any, tags: list[int], *, multiple: bool = False) -> None:
        sends.append((multiple, len(tags)))
        await original(self, ready, tags, multiple=multiple)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(acks_module.Acks, "_send", counting)
        connection = await aio_pika.connect(AMQP_URL)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=COUNT)
        consumed = await channel.declare_queue(name, passive=True)
        await consumed.consume(handle)  # type: ignore[arg-type]
        async with asyncio.timeout(20):
            while not finished():
                await asyncio.sleep(0.01)
        # An ack of a tag already settled would have closed the channel (406).
        assert not channel.is_closed
        # Dropped with anything unsettled: the broker takes it back.
        await connection.close()
    return sends


async def _left(connection: aio_pika.abc.AbstractConnection, name: str) -> list[int]:
    """What the queue holds once nobody consumes it, by body."""
    channel = await connection.channel()
    queue = await channel.declare_queue(name, passive=True)
    left = []
    async with asyncio.timeout(10):
        while (message := await queue.get(fail=False)) is not None:
            left.append(int(message.body))
            await message.ack()
    await channel.close()
    return sorted(left)


@pytest.mark.parametrize(("seed", "most"), [(1, 4096), (2, 4096), (3, 4096), (4, 4096), (5, 5)])
async def test_a_multiple_ack_never_settles_a_message_still_handled_or_sent_back(
    queue: tuple[aio_pika.abc.AbstractConnection, str],
    seed: int,
    most: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Handlers finish in a random order; some hold on, some nack, the rest ack.

    With `most` at 5, the window stops gathering early on, behind a held message.
    """
    monkeypatch.setattr(acks_module, "MOST_TRACKED", most)
    own, name = queue
    chance = random.Random(seed)
    numbers = list(range(COUNT))
    held = set(chance.sample(numbers, 6))
    sent_back = set(chance.sample([n for n in numbers if n not in held], 6))
    acks = Acks()
    release = asyncio.Event()
    acked = 0

    async def handle(message: AbstractIncomingMessage) -> None:
        nonlocal acked
        number = int(message.body)
        await asyncio.sleep(chance.random() * 0.02)
        if number in held:
            await release.wait()
            return
        if number in sent_back:
            await message.nack(requeue=False)
            acks.settled(message)
            return
        await acks.ack(message)
        acked += 1

    sends = await _consume_until(name, handle, lambda: acked == COUNT - len(held) - len(sent_back))
    release.set()
    assert await _left(own, name) == sorted(held)
    assert sum(count for _, count in sends) == acked


async def test_handlers_that_finish_together_share_one_frame(
    queue: tuple[aio_pika.abc.AbstractConnection, str],
) -> None:
    own, name = queue
    acks = Acks()
    done = 0

    async def handle(message: AbstractIncomingMessage) -> None:
        nonlocal done
        await acks.ack(message)
        done += 1

    sends = await _consume_until(name, handle, lambda: done == COUNT)
    assert await _left(own, name) == []
    assert any(multiple for multiple, _ in sends), sends
    assert len(sends) < COUNT / 4, sends


async def test_an_ack_on_a_closed_channel_fails_for_its_handler(
    queue: tuple[aio_pika.abc.AbstractConnection, str],
) -> None:
    _, name = queue
    first: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()

    async def handle(message: AbstractIncomingMessage) -> None:
        if not first.done():
            first.set_result(message)

    await _consume_until(name, handle, first.done)
    with pytest.raises(ChannelInvalidStateError):
        await Acks().ack(first.result())
