"""A memory alarm on a RabbitMQ node of the tests' own: blocked publishing, known at once.

RabbitMQ blocks a connection, and says so with `connection.blocked`, when it publishes
during an alarm: that first publish waits for PUBLISH_TIMEOUT. From then on the
receiver knows: deliveries go to the spool or get 503 without waiting, `/readyz` and a
metric say so, and all comes back when the alarm lifts. Workers go on consuming;
copies wait for the lift.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from tests.receivers import Receiver, SpawnReceiver, deliver
from tests.support import BusView, open_bus
from tests.tools.nodes import Node
from tests.worker_processes import start_worker

pytestmark = [pytest.mark.rabbit, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    own = Node("alarms")
    asyncio.run(own.start())
    try:
        yield own
    finally:
        own.shutdown()


@pytest.fixture
async def own_bus(node: Node) -> AsyncIterator[BusView]:
    """A prefix of the test's own on the node; the node is deleted with the module."""
    connection, bus = await open_bus(f"alarm-{uuid.uuid4().hex[:10]}", node.url)
    try:
        yield bus
    finally:
        # Lifted whatever happened, so that the next test finds the node as it was.
        await asyncio.to_thread(node.memory_alarm, False)
        await connection.close()


async def post(receiver: Receiver) -> tuple[int, dict[str, Any]]:
    return await deliver(receiver, "placement_updated")


async def until(condition: Any, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not await condition():
            await asyncio.sleep(0.1)


async def queue_depth(url: str, name: str) -> int:
    """Messages ready on `name`, asked on a connection that never publishes (never blocked)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)


async def test_without_a_spool_a_blocked_broker_gets_503_at_once_and_readyz_says_so(
    node: Node, own_bus: BusView, spawn_receiver: SpawnReceiver
) -> None:
    receiver = await spawn_receiver(AMQP_URL=node.url, BUS_PREFIX=own_bus.names.prefix)
    assert (await post(receiver))[0] == 200  # a publishing connection: the broker tells it
    assert await receiver.metric("relay_broker_blocked") == 0
    await asyncio.to_thread(node.memory_alarm, True)
    assert (await post(receiver))[0] == 503  # it waited PUBLISH_TIMEOUT; now the broker told
    assert receiver.events("delivery")[-1]["error"] == "PublishTimeout"

    async def blocked() -> bool:
        return bool((await receiver.status())["broker"] == "blocked")

    await until(blocked)
    status = await receiver.status()
    assert (status["http"], status["status"]) == (503, "not_ready")
    assert await receiver.metric("relay_broker_blocked") == 1
    [line] = receiver.events(
        "broker blocked publishing; deliveries go to the spool or get 503 until it lifts"
    )
    assert line["reason"]
    assert line["level"] == "warning"
    assert (await post(receiver))[0] == 503
    # Failed as blocked, not after waiting PUBLISH_TIMEOUT for a confirm.
    assert receiver.events("delivery")[-1]["error"] == "BrokerBlocked"

    await asyncio.to_thread(node.memory_alarm, False)

    async def unblocked() -> bool:
        return bool((await receiver.status())["http"] == 200)

    await until(unblocked)
    assert (await receiver.status())["broker"] == "connected"
    assert await receiver.metric("relay_broker_blocked") == 0
    assert receiver.events("broker unblocked")
    assert (await post(receiver))[0] == 200


async def test_with_a_spool_a_blocked_broker_spools_at_once_and_drains_after(
    node: Node, own_bus: BusView, spawn_receiver: SpawnReceiver, tmp_path: Path
) -> None:
    receiver = await spawn_receiver(
        AMQP_URL=node.url, BUS_PREFIX=own_bus.names.prefix, SPOOL_DIR=str(tmp_path / "spool")
    )
    probe = await own_bus.probe("placement.#")

    async def connected() -> bool:
        # Ready with a spool means ready before the broker is: wait for the broker here.
        return bool((await receiver.status())["broker"] == "connected")

    await until(connected)
    assert (await post(receiver))[0] == 200
    await asyncio.to_thread(node.memory_alarm, True)
    first = await post(receiver)  # spooled after PUBLISH_TIMEOUT; then the broker told
    assert first[0] == 200

    async def blocked() -> bool:
        return bool((await receiver.status())["broker"] == "blocked")

    await until(blocked)
    status = await receiver.status()
    assert (status["http"], status["status"]) == (200, "ready")  # the spool takes deliveries
    answers = [first] + [await post(receiver) for _ in range(5)]
    assert [code for code, _ in answers] == [200] * 6
    spooled = [line for line in receiver.events("delivery") if line.get("stored") == "spool"]
    assert len(spooled) == 6
    causes = [line["spooled_because"] for line in spooled]
    assert causes == ["PublishTimeout"] + ["BrokerBlocked"] * 5
    assert (await receiver.status())["spool"]["records"] == 6

    await asyncio.to_thread(node.memory_alarm, False)

    async def drained() -> bool:
        return bool((await receiver.status())["spool"]["records"] == 0)

    await until(drained)
    ids = {body["id"] for _, body in answers}
    arrived: set[str | None] = set()
    async with asyncio.timeout(20):
        while not ids <= arrived:
            arrived.add((await own_bus.get(probe)).message_id)
    assert ids <= arrived


async def test_workers_go_on_consuming_while_blocked_and_copies_wait_for_the_lift(
    node: Node, own_bus: BusView, tmp_path: Path
) -> None:
    prefix = own_bus.names.prefix
    record = tmp_path / "records.jsonl"
    worker = await start_worker(
        "tests.workers.alarmed",
        tmp_path / "worker.log",
        {
            "AMQP_URL": node.url,
            "BUS_PREFIX": prefix,
            "RECORD_FILE": str(record),
            "HANDLER_SECONDS": "2",
            "LOG_FORMAT": "json",
        },
    )
    try:
        await own_bus.declare()
        for _ in range(24):
            await own_bus.publish_event("talent_created")
        failing = await own_bus.publish_event("placement_updated")

        async def retried() -> bool:
            return any(
                line.get("outcome") == "retried" for line in worker.events("message handled")
            )

        await until(retried)  # a retry copy went out: the worker's connection publishes
        await asyncio.to_thread(node.memory_alarm, True)

        def handled() -> int:
            return len(record.read_text().splitlines()) if record.exists() else 0

        at_alarm = handled()
        assert at_alarm < 24, "the test needs work left when the alarm starts"

        async def all_handled() -> bool:
            return handled() == 24

        await until(all_handled)
        # Acked while the alarm holds: the consuming connection is not blocked.
        assert await queue_depth(node.url, f"{prefix}.steady") == 0

        async def copy_held_back() -> bool:
            # The worker brings its due retry back itself (`consumers.runtime.returns`):
            # that publish, like the dead copy after it, waits for the lift.
            return any(
                line.get("error_type") == "BrokerBlocked"
                for line in worker.events("a due retry was not taken; it stays held")
            )

        await until(copy_held_back, within=40)
        assert worker.events(
            "broker blocked publishing; copies wait and their messages go back meanwhile"
        )
        assert await queue_depth(node.url, f"{prefix}.copying.dead") == 0

        await asyncio.to_thread(node.memory_alarm, False)

        async def dead_lettered() -> bool:
            return await queue_depth(node.url, f"{prefix}.copying.dead") >= 1

        await until(dead_lettered)
        assert worker.events("broker unblocked")
        # The copy that waited may land too once the alarm lifts: at least once, same id.
        dead = await own_bus.drain(await own_bus.queue(f"{prefix}.copying.dead"))
        assert {copy.message_id for copy in dead} == {failing}
        assert all(json.loads(copy.body)["EventName"] == "placement_updated" for copy in dead)
        assert await worker.stop() == 0
    finally:
        if worker.process.returncode is None:
            worker.process.kill()
            await worker.process.wait()
