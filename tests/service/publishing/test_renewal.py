"""After a nack, publishing moves to a new channel: receiver and worker, on the real broker.

A channel whose publishes a quorum queue refused while it had no leader may go on
being refused after the election (seen on a three-node cluster in `make faults`).
Here the refusal is an operator policy (`max-length` 0, `reject-publish`), which
shows the move and that work resumes once the broker takes messages again.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from aio_pika import Message

from tests.receivers import Receiver, SpawnReceiver, deliver
from tests.support import BusView
from tests.tools.policies import policy
from tests.worker_processes import SpawnWorker
from tests.workers.failures import failing

pytestmark = [pytest.mark.rabbit, pytest.mark.timeout(90)]

REFUSE = {"max-length": 0, "overflow": "reject-publish"}


async def post(receiver: Receiver) -> int:
    return (await deliver(receiver))[0]


async def test_the_receiver_publishes_on_a_new_channel_after_a_nack(
    bus: BusView, spawn_receiver: SpawnReceiver
) -> None:
    receiver = await spawn_receiver()
    probe = await bus.probe("talent.#")
    with policy(f"^{re.escape(probe.name)}$", REFUSE, queue=probe.name):
        assert await post(receiver) == 503  # nacked: no spool here
        async with asyncio.timeout(10):
            while not receiver.events("the broker refused a publish; publishing on a new channel"):
                await asyncio.sleep(0.1)
    async with asyncio.timeout(10):
        while await post(receiver) != 200:
            await asyncio.sleep(0.2)
    assert (await bus.get(probe)).routing_key == "talent.created"
    assert (await receiver.status())["broker"] == "connected"


async def test_a_worker_sends_copies_on_a_new_channel_after_a_nack(
    bus: BusView, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    record = tmp_path / "records.jsonl"
    worker = await spawn_worker(
        "tests.workers.failures.failing",
        failing.consumer,
        RECORD_FILE=str(record),
        LOG_FORMAT="json",
    )
    dead = f"{bus.names.prefix}.failing.dead"
    with policy(f"^{re.escape(dead)}$", REFUSE, queue=dead):
        # A quorum queue takes one message over max-length 0 before it refuses.
        await bus.channel.default_exchange.publish(Message(b"filler"), routing_key=dead)
        sent = await bus.publish_event("talent_created", Fail="always")
        async with asyncio.timeout(15):
            while not worker.events("the broker refused a copy; copies go out on a new channel"):
                await asyncio.sleep(0.1)
        assert await depth(bus, dead) == 1  # the dead copy was refused: the message went back
    # With the policy gone, the dead copy lands.
    async with asyncio.timeout(30):
        while await depth(bus, dead) < 2:
            await asyncio.sleep(0.1)
    letters = await bus.drain(await bus.queue(dead))
    assert [m.message_id for m in letters][1:] == [sent]
    assert {json.loads(line)["message_id"] for line in record.read_text().splitlines()} == {sent}
    assert await worker.stop() == 0


async def depth(bus: BusView, name: str) -> int:
    queue = await bus.channel.declare_queue(name, passive=True)
    return int(queue.declaration_result.message_count or 0)
