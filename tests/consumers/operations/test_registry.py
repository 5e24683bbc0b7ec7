"""The registry: a log that any number of readers see whole, and earlier registries moved in."""

from __future__ import annotations

import asyncio

import aio_pika
import orjson
import pytest

from consumers.operations import registry
from consumers.topology import ConsumerQueues
from service.shared.bus import BusNames
from service.shared.topology import QUORUM
from tests.support import AMQP_URL, BusView, all_at_once, connections
from tests.worker_processes import SpawnWorker, run_cli
from tests.workers import crm_old, talent_v1

pytestmark = pytest.mark.rabbit


async def test_readers_at_once_all_see_the_whole_registry(
    bus: BusView, spawn_worker: SpawnWorker
) -> None:
    for module, consumer in (("crm_old", crm_old.consumer), ("talent_v1", talent_v1.consumer)):
        await spawn_worker(f"tests.workers.{module}", consumer, METRICS_PORT="0")
    async with await aio_pika.connect(AMQP_URL) as connection:
        seen = await asyncio.gather(*(registry.read(connection, bus.names) for _ in range(10)))
    assert all(entries == seen[0] for entries in seen)
    assert sorted(seen[0]) == ["crm-old", "talent-watch"]
    old = ConsumerQueues(bus.names.prefix, "crm-old")
    assert seen[0]["crm-old"].patterns == ("placement.#",)
    assert {old.main, old.dead, old.retry(1)} == set(seen[0]["crm-old"].queues)


async def test_processes_appending_to_a_new_log_at_once_keep_their_connections(
    bus: BusView,
) -> None:
    # As workers starting together on a new prefix: publishing to a stream another
    # connection is still creating had RabbitMQ close the publisher's connection
    # (INTERNAL_ERROR).
    async with connections(4) as writers:
        for attempt in range(10):
            names = BusNames(f"{bus.names.prefix}-{attempt}")
            bus.forget_later(registry.registry_stream(names))
            record: dict[str, list[str]] = {"queues": [], "patterns": []}
            await all_at_once(
                writers,
                (
                    registry.append(writer, names, {"consumer": f"c{n}", **record})
                    for n, writer in enumerate(writers)
                ),
                attempt,
            )
            assert sorted(await registry.read(writers[0], names)) == ["c0", "c1", "c2", "c3"]


async def test_reading_an_unused_prefix_creates_nothing(bus: BusView) -> None:
    async with await aio_pika.connect(AMQP_URL) as connection:
        assert await registry.read(connection, bus.names) == {}
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelClosed):
            await channel.declare_queue(registry.registry_stream(bus.names), passive=True)


async def test_an_earlier_registry_is_moved_into_the_log(bus: BusView) -> None:
    old = ConsumerQueues(bus.names.prefix, "crm-old")
    legacy = registry.legacy_queue(bus.names)
    bus.forget_later(old.bindings)
    for name, body in (
        (legacy, {"consumers": {"crm-old": [old.main, old.dead, old.bindings, old.retry(7)]}}),
        (old.bindings, ["placement.#"]),
    ):
        await bus.channel.declare_queue(name, durable=True, arguments=QUORUM)
        await bus.channel.default_exchange.publish(
            aio_pika.Message(orjson.dumps(body)), routing_key=name
        )
    env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix}
    code, out, _ = await run_cli(env, "list", "tests.workers.talent_v1")
    assert code == 0
    assert "crm-old  (no queue;" in out
    async with await aio_pika.connect(AMQP_URL) as connection:
        entry = (await registry.read(connection, bus.names))["crm-old"]
        assert entry.patterns == ("placement.#",)
        assert set(entry.queues) == {old.main, old.dead, old.retry(7)}
        for gone in (legacy, old.bindings):
            channel = await connection.channel()
            with pytest.raises(aio_pika.exceptions.ChannelClosed):
                await channel.declare_queue(gone, passive=True)
