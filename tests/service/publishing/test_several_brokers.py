"""AMQP_URL listing several nodes: receiver, workers and commands move to the next one.

The first node is one of the test's own, stopped mid-test; the second is the shared
broker. They are not one cluster (that is `make faults`), which is enough to show
who connects where, and that the move needs nobody.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.settings import Settings
from tests.receivers import Receiver, SpawnReceiver, deliver
from tests.support import (
    AMQP_URL,
    BusView,
    open_bus,
)
from tests.tools.nodes import Node, free_port
from tests.worker_processes import SpawnWorker, run_cli
from tests.workers import recorder

pytestmark = [pytest.mark.rabbit, pytest.mark.timeout(120)]

KEYS = {"WEBHOOK_API_KEYS": "a-key-for-settings"}


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    own = Node("failover")
    asyncio.run(own.start())
    try:
        yield own
    finally:
        own.shutdown()


def port_of(line: dict[str, object]) -> int:
    return int(str(line["broker"]).rsplit(":", 1)[1].strip("/"))


async def post(receiver: Receiver, correlation: str) -> int:
    return (await deliver(receiver, correlation=correlation))[0]


async def until(condition: object, within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.1)


def test_every_url_in_the_list_is_checked_and_none_is_shown() -> None:
    good = "amqp://relay:pw-one-31337@a.internal/prod"
    listed = f"{good}, amqp://relay:pw-two-31337@b.internal/prod"
    settings = Settings.from_env({**KEYS, "AMQP_URL": listed})
    assert settings.amqp_urls == (good, "amqp://relay:pw-two-31337@b.internal/prod")
    assert {"pw-one-31337", "pw-two-31337"} <= set(settings.secret_values())
    assert "pw-" not in settings.broker_display
    assert settings.broker_display.count("***") == 2
    for bad, problem in (
        (f"{good},http://x/", "AMQP_URL: entry 2 must be an amqp:// or amqps:// URL with a host"),
        (f"{good},amqp://relay:pw@b.internal/other", "every URL must name the same vhost"),
        (" , ", "AMQP_URL: holds no URL"),
    ):
        with pytest.raises(Exception, match=problem) as raised:
            Settings.from_env({**KEYS, "AMQP_URL": bad})
        assert "pw" not in str(raised.value)


async def test_the_receiver_moves_to_the_next_node_when_its_node_stops(
    node: Node, bus: BusView, spawn_receiver: SpawnReceiver
) -> None:
    connection, own = await open_bus(bus.names.prefix, node.url)
    try:
        receiver = await spawn_receiver(AMQP_URL=f"{node.url},{AMQP_URL}")
        [connected] = receiver.events("broker connected")
        assert port_of(connected) == node.port
        on_node = await own.probe("talent.#")
        on_shared = await bus.probe("talent.#")
        assert await post(receiver, "before-the-stop") == 200
        assert json.loads((await own.get(on_node)).body)["CorrelationId"] == "before-the-stop"
        await connection.close()

        await asyncio.to_thread(node.stop_app)
        await until(lambda: len(receiver.events("broker connected")) == 2)
        moved = receiver.events("broker connected")[-1]
        assert port_of(moved) == int(AMQP_URL.rsplit(":", 1)[1].split("/")[0])
        assert receiver.events("broker connection lost")
        assert await post(receiver, "after-the-stop") == 200
        assert json.loads((await bus.get(on_shared)).body)["CorrelationId"] == "after-the-stop"
        assert "guest:guest" not in receiver.log.read_text()
    finally:
        await asyncio.to_thread(node.start_app)


async def test_a_worker_moves_to_the_next_node_and_goes_on_handling(
    node: Node, bus: BusView, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    record = tmp_path / "records.jsonl"
    connection, own = await open_bus(bus.names.prefix, node.url)
    try:
        worker = await spawn_worker(
            "tests.workers.recorder",
            recorder.consumer,
            AMQP_URL=f"{node.url},{AMQP_URL}",
            RECORD_FILE=str(record),
            LOG_FORMAT="json",
        )
        [started] = worker.events("worker started")
        assert port_of(started) == node.port
        first = await own.publish_event("talent_created")
        await until(lambda: record.exists() and first in record.read_text())
        await connection.close()

        await asyncio.to_thread(node.stop_app)
        await until(lambda: bool(worker.events("worker reconnected")))
        [moved] = worker.events("worker reconnected")
        assert port_of(moved) != node.port
        second = await bus.publish_event("talent_created")
        await until(lambda: second in record.read_text())
        assert "guest:guest" not in worker.text()
        assert await worker.stop() == 0
    finally:
        await asyncio.to_thread(node.start_app)


async def test_commands_take_the_list_and_skip_a_node_that_is_down(bus: BusView) -> None:
    down = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    env = {"AMQP_URL": f"{down},{AMQP_URL}", "BUS_PREFIX": bus.names.prefix}
    code, out, err = await run_cli(env, "list", "tests.workers.recorder")
    assert code == 0, err
    assert "recorder" in out
