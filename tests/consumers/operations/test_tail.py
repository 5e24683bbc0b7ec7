"""`consumers tail`: a live view that takes nothing from consumers and leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import pytest

from consumers.operations.tail import Seen, Tail
from service.shared import brokers
from tests.receivers import base_env
from tests.support import AMQP_URL, BusView
from tests.tools.tcp_proxy import TcpProxy
from tests.worker_processes import SpawnWorker, run_cli
from tests.workers import talent_v1, talent_v2

pytestmark = pytest.mark.rabbit


class TailProcess:
    """`python -m consumers tail ...` with its output read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self, within: float = 10) -> str:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), within)
        return raw.decode().rstrip("\n")

    async def ready(self) -> None:
        assert self.process.stderr is not None
        started = await asyncio.wait_for(self.process.stderr.readline(), 15)
        # Said once its queues are bound: what is published from now on shows.
        assert started.startswith(b"tailing "), started

    async def said_until(self, start: bytes, within: float = 20) -> list[bytes]:
        """Lines on stderr up to and including the first that starts with `start`."""
        assert self.process.stderr is not None
        said: list[bytes] = []
        async with asyncio.timeout(within):
            while not said or not said[-1].startswith(start):
                said.append(await self.process.stderr.readline())
        return said

    async def stop(self, signum: int = signal.SIGINT) -> int:
        self.process.send_signal(signum)
        return await asyncio.wait_for(self.process.wait(), 15)


async def tail(bus: BusView, *args: str, url: str = AMQP_URL) -> TailProcess:
    env = base_env(AMQP_URL=url, BUS_PREFIX=bus.names.prefix, LOG_LEVEL="warning")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumers",
        "tail",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    running = TailProcess(process)
    await running.ready()
    return running


async def unrouted_ids(bus: BusView) -> list[str]:
    return [str(m.message_id) for m in await bus.drain(await bus.queue(bus.names.unrouted))]


async def test_tail_shows_every_event_and_takes_none(
    bus: BusView, spawn_worker: SpawnWorker
) -> None:
    await spawn_worker("tests.workers.talent_v1", talent_v1.consumer, METRICS_PORT="0")
    watching = await tail(bus)
    routed = await bus.publish_event("talent_created", FrontOfficeTenantId=12)
    unbound = await bus.publish_event("company_updated")
    lines = [await watching.line(), await watching.line()]
    by_id = {line.split("id=")[1].split()[0]: line for line in lines}
    assert set(by_id) == {routed, unbound}
    assert "talent_created  tenant=12" in by_id[routed]
    assert "(unrouted" in by_id[unbound]
    assert await watching.stop() == 0
    assert await unrouted_ids(bus) == [unbound]  # the alternate exchange still kept it


async def test_a_tail_whose_connection_is_lost_says_so_and_goes_on(
    bus: BusView, proxy: TcpProxy
) -> None:
    await bus.declare()
    watching = await tail(bus, url=proxy.url_for(AMQP_URL))
    before = await bus.publish_event("talent_created", CorrelationId="before-cut")
    assert f"id={before}" in await watching.line()
    await proxy.cut()  # the broker's node went away, as far as the tail can tell
    said = await watching.said_until(b"tailing ")
    assert b"tail: lost the broker connection; connecting again\n" in said
    assert said[-1].startswith(b"tailing " + bus.names.prefix.encode() + b" again;")
    after = await bus.publish_event("talent_created", CorrelationId="after-cut")
    assert f"id={after}" in await watching.line()
    assert watching.process.returncode is None  # still running until Ctrl-C
    assert await watching.stop() == 0


async def test_tail_filters_and_prints_json(bus: BusView) -> None:
    await bus.declare()
    watching = await tail(bus, "company_updated", "--json")
    other = await bus.publish_event("talent_created")  # not shown: another pattern
    wanted = await bus.publish_event("company_updated", Resource='{"Id": 7}')
    shown = json.loads(await watching.line())
    assert shown["message_id"] == wanted
    assert shown["body"]["EventName"] == "company_updated"
    assert shown["headers"]["x-event-name"] == "company_updated"
    assert await watching.stop(signal.SIGTERM) == 0
    assert await unrouted_ids(bus) == [other, wanted]  # no consumer here: both kept


async def test_an_event_of_a_pattern_unbound_while_tailing_is_still_kept(
    bus: BusView, spawn_worker: SpawnWorker
) -> None:
    first = await spawn_worker("tests.workers.talent_v1", talent_v1.consumer, METRICS_PORT="0")
    watching = await tail(bus)  # binds talent.#, as the consumer's record says
    await first.stop()
    # The same consumer, redeployed with other patterns: it unbinds talent.#.
    await spawn_worker("tests.workers.talent_v2", talent_v2.consumer, METRICS_PORT="0")
    orphan = await bus.publish_event("talent_created")
    assert orphan in await watching.line()
    assert await watching.stop() == 0
    assert await unrouted_ids(bus) == [orphan]  # kept in .unrouted, once


async def test_a_killed_tail_leaves_no_queue(bus: BusView) -> None:
    await bus.declare()
    before = await bus.publish_event("company_updated")
    watching = await tail(bus)
    watching.process.kill()
    await watching.process.wait()
    await asyncio.sleep(0.5)
    after = await bus.publish_event("company_updated")
    # Had a tail queue outlived its connection, it would still hold this one.
    assert await unrouted_ids(bus) == [before, after]


async def test_events_of_a_consumer_started_after_the_tail_show(
    bus: BusView, spawn_worker: SpawnWorker
) -> None:
    await bus.declare()
    watching = await tail(bus)
    await spawn_worker("tests.workers.talent_v1", talent_v1.consumer, METRICS_PORT="0")
    await asyncio.sleep(2.5)  # the tail follows the consumers' records every 2 s
    routed = await bus.publish_event("talent_created")
    assert routed in await watching.line()
    assert await watching.stop() == 0
    assert await unrouted_ids(bus) == []


async def test_two_tails_and_a_listing_at_once_copy_nothing_into_unrouted(
    bus: BusView, spawn_worker: SpawnWorker
) -> None:
    # Readers of the registry at the same time must all see it whole: none may take
    # the consumer's record from another and think its events reached no consumer.
    await spawn_worker("tests.workers.talent_v1", talent_v1.consumer, METRICS_PORT="0")
    tails = [await tail(bus), await tail(bus)]
    env = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix}
    sent = []
    for n in range(60):
        sent.append(await bus.publish_event("talent_created"))
        if n % 20 == 0:
            assert (await run_cli(env, "list", "tests.workers.talent_v1"))[0] == 0
    for watching in tails:
        seen = {(await watching.line()).split("id=")[1].split()[0] for _ in sent}
        assert seen == set(sent)  # every tail printed every event
    for watching in tails:
        assert await watching.stop() == 0
    assert await unrouted_ids(bus) == []  # and none was copied into .unrouted


async def test_a_tail_is_ready_only_once_its_queues_are_bound(bus: BusView) -> None:
    await bus.declare()
    seen: list[Seen] = []
    stop, ready = asyncio.Event(), asyncio.Event()
    connection = await brokers.connect(AMQP_URL)
    async with connection:
        tail = Tail(connection, bus.names, seen.append)
        running = asyncio.create_task(tail.run(stop, ready=ready.set))
        await asyncio.wait_for(ready.wait(), 15)
        published = await bus.publish_event("company_updated")  # no pause after `ready`
        async with asyncio.timeout(10):
            while not seen:
                await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(running, 15)
    assert [str(s.message.message_id) for s in seen] == [published]
    assert seen[0].unrouted
