"""Workers against the real broker: fan-out, matching, retries, dead letters, replay, reconnect."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from asyncio.subprocess import PIPE
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import pytest

from consumers import Consumer, Event, Reject
from consumers.topology import ConsumerQueues
from tests.conftest import WorkerFactory
from tests.receivers import ROOT
from tests.support import AMQP_URL, BusView
from tests.tools.tcp_proxy import proxy_to

pytestmark = pytest.mark.rabbit


FAST_RETRIES = (0.1, 0.1)


class Seen:
    """What a test handler saw, with a way to wait for it."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def add(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    async def until(self, count: int, within: float = 10.0) -> list[Event]:
        async with asyncio.timeout(within):
            while len(self.events) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.events

    @property
    def ids(self) -> Counter[str]:
        return Counter(event.message_id for event in self.events)


async def settle() -> None:
    """Give a wrongly routed or repeated delivery the time to show up."""
    await asyncio.sleep(0.5)


def recording(consumer: Consumer, *patterns: str) -> Seen:
    seen = Seen()

    @consumer.on(*patterns)
    async def record(event: Event) -> None:
        seen.add(event)

    return seen


async def test_overlapping_consumers_each_get_every_match_once(
    bus: BusView, run_worker: WorkerFactory
) -> None:
    placements, updates = Consumer("placements"), Consumer("updates")
    seen_p = recording(placements, "placement.#", "talent_created")
    seen_u = recording(updates, "#.updated")
    await run_worker(placements, updates)
    ids = {}
    for name in ("placement_updated", "placement_started", "talent_created", "company_updated"):
        ids[name] = await bus.publish_event(name, CorrelationId=f"id-{name}")
    stray = await bus.publish_event("contact_created", CorrelationId="id-stray")

    await seen_p.until(3)
    await seen_u.until(2)
    await settle()
    assert seen_p.ids == Counter(
        [ids["placement_updated"], ids["placement_started"], ids["talent_created"]]
    )
    assert seen_u.ids == Counter([ids["placement_updated"], ids["company_updated"]])
    unrouted = await bus.drain(await bus.queue(bus.names.unrouted))
    assert [message.message_id for message in unrouted] == [stray]


async def test_broker_routing_agrees_with_handler_matching(
    bus: BusView, run_worker: WorkerFactory
) -> None:
    patterns = ["placement_updated", "placement.*", "placement.#", "#.created", "*.job.*", "#"]
    keys = [
        "placement_updated",
        "placement_extension_deleted",
        "talent_created",
        "talent_login_created",
        "VMS_job_created",
        "job_updated",
    ]
    consumers = [Consumer(f"p{index}") for index in range(len(patterns))]
    seen = [
        recording(consumer, pattern) for consumer, pattern in zip(consumers, patterns, strict=True)
    ]
    await run_worker(*consumers)
    for index, key in enumerate(keys):
        await bus.publish_event(key, CorrelationId=f"k{index}")
    await seen[-1].until(len(keys))
    await settle()
    # The catch-all consumer saw every key once; each other consumer must have been
    # routed exactly the keys its own handler matching accepts.
    universe = sorted(event.routing_key for event in seen[-1].events)
    assert universe == sorted(
        [
            "placement.updated",
            "placement.extension.deleted",
            "talent.created",
            "talent.login.created",
            "vms.job.created",
            "job.updated",
        ]
    )
    for consumer, saw in zip(consumers, seen, strict=True):
        routed = sorted(event.routing_key for event in saw.events)
        assert routed == [key for key in universe if consumer.handlers_for(key)], consumer


async def test_fail_twice_then_succeed(bus: BusView, run_worker: WorkerFactory) -> None:
    consumer = Consumer("flaky", retry_delays=(0.2, 0.2, 0.2))
    attempts: list[int] = []
    done = asyncio.Event()

    @consumer.on("talent_created")
    async def handle(event: Event) -> None:
        attempts.append(event.attempt)
        if event.attempt < 3:
            raise RuntimeError(f"try {event.attempt} fails")
        assert event.routing_key == "talent.created"
        done.set()

    await run_worker(consumer)
    await bus.publish_event("talent_created", CorrelationId="flaky-1")
    async with asyncio.timeout(10):
        await done.wait()
    await settle()
    assert attempts == [1, 2, 3]
    queues = ConsumerQueues(bus.names.prefix, consumer.name)
    assert await bus.drain(await bus.queue(queues.dead)) == []


async def test_always_failing_ends_in_dead_with_the_story(
    bus: BusView, run_worker: WorkerFactory
) -> None:
    consumer = Consumer("doomed", retry_delays=FAST_RETRIES)
    attempts: list[int] = []

    @consumer.on("placement_updated")
    async def handle(event: Event) -> None:
        attempts.append(event.attempt)
        raise ValueError(f"placement {event.tenant_id} is broken")

    await run_worker(consumer)
    message_id = await bus.publish_event("placement_updated", CorrelationId="doomed-1")
    dead_queue = await bus.queue(ConsumerQueues(bus.names.prefix, consumer.name).dead)
    dead = await bus.get(dead_queue, timeout=10)
    assert attempts == [1, 2, 3]
    assert dead.message_id == message_id
    assert json.loads(dead.body)["CorrelationId"] == "doomed-1"
    headers = dead.headers
    assert headers["x-consumer"] == "doomed"
    assert headers["x-error-type"] == "ValueError"
    assert headers["x-error-message"] == "placement 6 is broken"
    assert headers["x-attempts"] == 3
    assert headers["x-routing-key"] == "placement.updated"
    first = datetime.fromisoformat(str(headers["x-first-failure-at"]))
    last = datetime.fromisoformat(str(headers["x-last-failure-at"]))
    assert first < last
    assert headers["x-event-name"] == "placement_updated"


async def test_reject_goes_to_dead_at_once(bus: BusView, run_worker: WorkerFactory) -> None:
    consumer = Consumer("picky", retry_delays=FAST_RETRIES)
    attempts: list[int] = []

    @consumer.on("talent_merged")
    async def handle(event: Event) -> None:
        attempts.append(event.attempt)
        raise Reject("merges are not for us")

    await run_worker(consumer)
    await bus.publish_event("talent_merged", CorrelationId="picky-1")
    dead = await bus.get(await bus.queue(ConsumerQueues(bus.names.prefix, "picky").dead))
    assert dead.headers["x-error-type"] == "Reject"
    assert dead.headers["x-attempts"] == 1
    await settle()
    assert attempts == [1]


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


async def cli(*args: str, prefix: str) -> CliResult:
    """Run `python -m consumers ...` without blocking the in-process worker."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AMQP_URL": AMQP_URL, "BUS_PREFIX": prefix}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumers", *args, env=env, stdout=PIPE, stderr=PIPE
    )
    async with asyncio.timeout(30):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return CliResult(process.returncode, stdout.decode(), stderr.decode())


async def test_dead_shows_and_replay_brings_back(bus: BusView, run_worker: WorkerFactory) -> None:
    consumer = Consumer("replayable", retry_delays=(0.1,))
    healthy = asyncio.Event()
    seen = Seen()

    @consumer.on("contact_updated")
    async def handle(event: Event) -> None:
        if not healthy.is_set():
            raise ConnectionError("CRM is down")
        seen.add(event)

    await run_worker(consumer)
    sent = [await bus.publish_event("contact_updated", CorrelationId=f"r-{n}") for n in range(3)]
    queues = ConsumerQueues(bus.names.prefix, consumer.name)
    async with asyncio.timeout(10):
        while (await bus.queue(queues.dead)).declaration_result.message_count != 3:
            await asyncio.sleep(0.1)

    shown = await cli("dead", "replayable", prefix=bus.names.prefix)
    assert shown.returncode == 0, shown.stderr
    assert f"{queues.dead}: 3 dead letter(s)" in shown.stdout
    assert "3  ConnectionError: CRM is down" in shown.stdout
    assert (await bus.queue(queues.dead)).declaration_result.message_count == 3

    healthy.set()
    some = await cli("replay", "replayable", "--limit", "2", prefix=bus.names.prefix)
    assert some.returncode == 0, some.stderr
    assert "replayed 2 dead letter(s)" in some.stdout
    rest = await cli("replay", "replayable", prefix=bus.names.prefix)
    assert "replayed 1 dead letter(s)" in rest.stdout
    events = await seen.until(3)
    assert sorted(event.message_id for event in events) == sorted(sent)
    assert {event.attempt for event in events} == {1}
    assert {event.routing_key for event in events} == {"contact.updated"}
    assert await bus.drain(await bus.queue(queues.dead)) == []


async def test_bindings_follow_the_code(bus: BusView, run_worker: WorkerFactory) -> None:
    before = Consumer("evolving")
    recording(before, "talent_created", "contact_updated")
    first = await run_worker(before)
    await first.stop()

    after = Consumer("evolving")
    seen = recording(after, "talent_created")
    await run_worker(after)
    await bus.publish_event("contact_updated", CorrelationId="dropped-pattern")
    kept = await bus.publish_event("talent_created", CorrelationId="kept-pattern")
    await seen.until(1)
    await settle()
    assert list(seen.ids) == [kept]
    unrouted = await bus.drain(await bus.queue(bus.names.unrouted))
    assert [message.message_id for message in unrouted] == ["dropped-pattern"]


async def test_a_bad_resource_never_crashes_the_worker(
    bus: BusView, run_worker: WorkerFactory
) -> None:
    consumer = Consumer("resources")
    seen = recording(consumer, "#")
    await run_worker(consumer)
    await bus.publish_event("placement_updated", CorrelationId="bad", Resource="{not json")
    await bus.publish_event("placement_updated", CorrelationId="none")
    await bus.publish_event("placement_updated", CorrelationId="good", Resource='{"PlacementId":7}')
    events = {event.message_id: event for event in await seen.until(3)}
    assert events["bad"].resource is None
    assert events["none"].resource is None
    assert events["good"].resource == {"PlacementId": 7}
    assert events["good"].correlation_id == "good"
    assert events["good"].tenant_id == 6
    assert events["good"].payload["Resource"] == '{"PlacementId":7}'
    assert json.loads(events["good"].body)["CorrelationId"] == "good"
    assert events["good"].redelivered is False


async def test_the_worker_resumes_after_a_lost_link(
    bus: BusView, run_worker: WorkerFactory
) -> None:
    async with proxy_to(AMQP_URL) as (proxy, through):
        consumer = Consumer("resilient")
        seen = recording(consumer, "talent_created")
        await run_worker(consumer, amqp_url=through)
        await bus.publish_event("talent_created", CorrelationId="before")
        await seen.until(1)

        proxy.refuse(True)
        await proxy.cut()
        await bus.publish_event("talent_created", CorrelationId="during")
        await asyncio.sleep(1.0)
        assert list(seen.ids) == ["before"]
        proxy.refuse(False)
        await bus.publish_event("talent_created", CorrelationId="after")
        await seen.until(3, within=30)
        assert set(seen.ids) == {"before", "during", "after"}


async def test_a_cancelled_error_from_a_handler_is_a_failure_not_a_stall(
    bus: BusView, run_worker: WorkerFactory
) -> None:
    consumer = Consumer("cancelled", retry_delays=(0.1,))
    attempts: list[int] = []

    @consumer.on("talent_created")
    async def handle(event: Event) -> None:
        attempts.append(event.attempt)
        if event.attempt == 1:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.cancel()
            await future  # raises CancelledError, though nobody cancelled the worker

    await run_worker(consumer)
    await bus.publish_event("talent_created", CorrelationId="cancel-1")
    async with asyncio.timeout(10):
        while attempts != [1, 2]:
            await asyncio.sleep(0.05)


async def test_replay_stops_at_what_was_there(bus: BusView, run_worker: WorkerFactory) -> None:
    consumer = Consumer("rejecting", retry_delays=())
    seen = Seen()

    @consumer.on("job_created")
    async def handle(event: Event) -> None:
        seen.add(event)
        raise Reject("never wanted")

    await run_worker(consumer)
    await bus.publish_event("job_created", CorrelationId="again-and-again")
    queues = ConsumerQueues(bus.names.prefix, consumer.name)
    await bus.get(await bus.queue(queues.dead))  # consume it, then put one back
    await bus.publish_event("job_created", CorrelationId="again-and-again-2")
    await seen.until(2)
    async with asyncio.timeout(10):
        while (await bus.queue(queues.dead)).declaration_result.message_count != 1:
            await asyncio.sleep(0.05)
    replayed = await cli("replay", "rejecting", prefix=bus.names.prefix)
    assert "replayed 1 dead letter(s)" in replayed.stdout


async def test_sigterm_during_an_outage_still_stops(
    bus: BusView, run_worker: WorkerFactory
) -> None:
    async with proxy_to(AMQP_URL) as (proxy, through):
        consumer = Consumer("stoppable")
        recording(consumer, "talent_created")
        running = await run_worker(consumer, amqp_url=through)
        proxy.stall()
        async with asyncio.timeout(30):
            await running.stop()
        proxy.resume()
