"""Dead letters survive being looked at, whatever delivery limit a policy puts on them."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import aio_pika
import pytest

from consumers import Consumer, Event, Reject
from consumers.operations.dead import folded, inspect_dead
from consumers.topology import ConsumerQueues
from tests.conftest import WorkerFactory
from tests.support import AMQP_URL, BusView
from tests.tools.policies import policy
from tests.worker_processes import run_cli

pytestmark = pytest.mark.rabbit

LOOKS = 25
LIMIT = 20  # RabbitMQ 4's default for quorum queues; here set by a policy


async def test_dead_letters_survive_25_looks_under_a_delivery_limit_of_20(
    bus: BusView, run_worker: WorkerFactory
) -> None:
    consumer = Consumer("hopeless", retry_delays=())
    fixed = asyncio.Event()
    handled: list[str] = []

    @consumer.on("contact_updated")
    async def handle(event: Event) -> None:
        if not fixed.is_set():
            raise Reject("the CRM refuses this contact")
        handled.append(event.message_id)

    queues = ConsumerQueues(bus.names.prefix, consumer.name)
    every_queue = f"^{re.escape(bus.names.prefix)}\\."
    worker = await run_worker(consumer)
    with policy(every_queue, {"delivery-limit": LIMIT}, queue=queues.dead):
        sent = [await bus.publish_event("contact_updated") for _ in range(3)]
        async with asyncio.timeout(10):
            while (await bus.queue(queues.dead)).declaration_result.message_count != 3:
                await asyncio.sleep(0.05)

        async with await aio_pika.connect(AMQP_URL) as connection:
            for _ in range(LOOKS - 1):
                report = await inspect_dead(connection, queues, 1000)
                assert (report.count, report.sampled) == (3, 3)
        env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix}
        code, out, _ = await run_cli(env, "dead", "hopeless")  # the 25th look, as a user
        assert code == 0
        assert f"{queues.dead}: 3 dead letter(s)" in out
        assert "3  Reject: the CRM refuses this contact" in out

        letters = await bus.drain(await bus.queue(queues.dead))
        assert [m.message_id for m in letters] == sent  # all there, in their order
        assert all(m.headers["x-error-type"] == "Reject" for m in letters)
        for letter in letters:  # drained for the check; put back as they were
            await bus.channel.default_exchange.publish(
                aio_pika.Message(letter.body, headers=letter.headers, message_id=letter.message_id),
                routing_key=queues.dead,
            )

        fixed.set()
        code, out, _ = await run_cli(env, "replay", "hopeless")
        assert (code, out.split(" dead")[0]) == (0, "replayed 3")
        async with asyncio.timeout(10):
            while len(handled) < 3:
                await asyncio.sleep(0.05)
        assert sorted(handled) == sorted(sent)
        await worker.stop()


def test_ids_and_numbers_are_folded_out_of_an_error_message() -> None:
    text = (
        "talent 662 for order ORD-2024-17 failed (request 5d0c1e8e-3c55-4a55-9d2f-0b7f3f2a1c01,"
        " trace 4bf92f3577b34da6, at 0x7f3a2c1d, 123456789 bytes)"
    )
    assert folded(text) == (
        "talent <n> for order ORD-<n>-<n> failed (request <id>, trace <id>, at <id>, <n> bytes)"
    )
    unchanged = "the CRM refuses this contact; deadbeef accepted"
    assert folded(unchanged) == unchanged


async def test_errors_that_differ_only_in_their_ids_are_one_group(
    bus: BusView, run_worker: WorkerFactory
) -> None:
    consumer = Consumer("crm-lookup", retry_delays=())

    @consumer.on("placement_updated")
    async def handle(event: Event) -> None:
        placement = (event.resource or {})["PlacementId"]
        text = f"placement {placement} is not in the CRM (request {uuid.uuid4()})"
        raise (Reject if placement < 100 else LookupError)(text)

    await run_worker(consumer)
    for placement in (11, 22, 33, 4040):
        resource = json.dumps({"PlacementId": placement})
        await bus.publish_event("placement_updated", Resource=resource)
    dead = ConsumerQueues(bus.names.prefix, consumer.name).dead
    async with asyncio.timeout(10):
        while (await bus.queue(dead)).declaration_result.message_count != 4:
            await asyncio.sleep(0.05)

    env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix}
    code, out, _ = await run_cli(env, "dead", consumer.name)
    assert code == 0
    lines = out.splitlines()
    errors = lines[lines.index("  errors (of 4 read):") + 1 :]
    assert [line.split("e.g. ")[0].rstrip() for line in errors] == [
        "         3  Reject: placement <n> is not in the CRM (request <id>)",
        "",
        "         1  LookupError: placement <n> is not in the CRM (request <id>)",
        "",
    ]
    assert re.fullmatch(
        r" +e\.g\. placement (11|22|33) is not in the CRM \(request [-0-9a-f]{36}\)", errors[1]
    )
    assert "placement 4040 is not in the CRM" in errors[3]
