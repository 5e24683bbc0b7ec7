"""One table of cases, run both ways: `deliver` in-process, and a worker on the real broker.

Each case is a consumer, an event and the attempts it arrives as; the table says the
fate of each delivery (status, delay, error) and which handlers ran. `deliver` must give
exactly that; so must a worker on RabbitMQ (and PostgreSQL for dedupe), read from where
each message ended up: a retry queue (its delay), `.dead`, `{prefix}.unrouted`, or
acked, as the worker counted it. The two cannot drift apart without a case failing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel

from consumers import Consumer, Event, Reject, RetryLater
from consumers.event import ATTEMPT, ROUTING_KEY
from consumers.runtime.returns import HOLD_LIMIT
from consumers.runtime.worker import Worker
from consumers.settings import WorkerSettings
from consumers.testing import MemoryDedupe, Outcome, deliver, sample
from consumers.topology import ConsumerQueues
from service.shared.bus import AuthMethod, BusNames, Receipt, event_message
from service.shared.envelope import parse, routing_key
from service.shared.environment import Secret
from service.shared.samples import encoded
from tests.support import AMQP_URL, BusView, consumer_queue_names, open_bus

# Longer than a worker holds retries itself (`consumers.runtime.returns`): a retry copy
# waits in its queue, where the test finds it, instead of in the worker's hands.
DELAYS = (1000.0, 2000.0, 4000.0)
assert min(DELAYS) > HOLD_LIMIT

# Which handlers ran, by message id: one record for both ways, as each has its own ids.
RAN: defaultdict[str, list[str]] = defaultdict(list)


async def behave(event: Event) -> None:
    """What the case asks of a handler, through the `Then` in the event's Resource."""
    then = (event.resource or {}).get("Then", "return")
    if then == "reject":
        raise Reject("retrying cannot help")
    if then == "reject_in_group":
        async with asyncio.TaskGroup() as group:
            group.create_task(reject())
    if then == "fail" or (then == "fail_first" and event.attempt == 1):
        raise RuntimeError("the handler failed")
    if then.startswith("later_"):
        raise RetryLater("come back later", after=float(then.removeprefix("later_")))


async def reject() -> None:
    raise Reject("rejected in a task")


plain = Consumer("parity-plain", retry_delays=DELAYS)


@plain.on("plain.#", "#.payroll")
async def act(event: Event) -> None:
    RAN[event.message_id].append("act")
    await behave(event)


tenants = Consumer("parity-tenants", retry_delays=DELAYS)


@tenants.on("tenants.#", tenants=[6])
async def six(event: Event) -> None:
    RAN[event.message_id].append("six")


@tenants.on("tenants.#", tenants=[6, 12])
async def six_or_twelve(event: Event) -> None:
    RAN[event.message_id].append("six_or_twelve")


once = Consumer("parity-once", retry_delays=DELAYS, dedupe=True)


@once.on("once.#")
async def first(event: Event) -> None:
    RAN[event.message_id].append("first")


@once.on("once.#")
async def second(event: Event) -> None:
    RAN[event.message_id].append("second")
    await behave(event)


CONSUMERS = (plain, tenants, once)
# A delivery's fate: status, delay, and the name of the error's type.
Fate = tuple[str, float | None, str | None]
OK: Fate = ("ok", None, None)
DUPLICATE: Fate = ("duplicate", None, None)
FILTERED: Fate = ("filtered", None, None)
UNBOUND: Fate = ("unbound", None, None)
REJECTED: Fate = ("dead", None, "Reject")


@dataclass(frozen=True)
class Case:
    """`event` delivered to `consumer` once per attempt in `attempts`, in turn."""

    id: str
    consumer: Consumer
    event: str  # its name; each case's routing key is its own
    fates: tuple[Fate, ...]
    ran: tuple[str, ...]
    then: str = "return"
    tenant: int | None = 6  # None: the event carries no tenant
    attempts: tuple[int, ...] = (1,)

    def body(self) -> bytes:
        event = sample(self.event, tenant=self.tenant, Then=self.then)
        if self.tenant is None:
            del event["FrontOfficeTenantId"]
        return encoded(event)


CASES = [
    Case("ok", plain, "plain_ok", (OK,), ("act",)),
    Case("camel-case-name-by-pattern", plain, "AcmeTimesheetPayroll", (OK,), ("act",)),
    Case("unbound", plain, "nobody_listens", (UNBOUND,), ()),
    Case("reject", plain, "plain_reject", (REJECTED,), ("act",), then="reject"),
    Case("reject-in-a-task-group", plain, "plain_group", (REJECTED,), ("act",), "reject_in_group"),
    Case(
        "fails-first-attempt",
        plain,
        "plain_fail_first",
        (("retry", 1000.0, "RuntimeError"),),
        ("act",),
        then="fail",
    ),
    Case(
        "fails-third-attempt",
        plain,
        "plain_fail_third",
        (("retry", 4000.0, "RuntimeError"),),
        ("act",),
        then="fail",
        attempts=(3,),
    ),
    Case(
        "fails-last-attempt",
        plain,
        "plain_fail_last",
        (("dead", None, "RuntimeError"),),
        ("act",),
        then="fail",
        attempts=(4,),
    ),
    Case(
        "retry-later-than-the-delay",
        plain,
        "plain_later_long",
        (("retry", 2000.0, "RetryLater"),),
        ("act",),
        then="later_1500",
    ),
    Case(
        "retry-later-than-every-delay",
        plain,
        "plain_later_longest",
        (("retry", 4000.0, "RetryLater"),),
        ("act",),
        then="later_99999",
    ),
    Case(
        "retry-later-within-the-delay",
        plain,
        "plain_later_short",
        (("retry", 2000.0, "RetryLater"),),
        ("act",),
        then="later_10",
        attempts=(2,),
    ),
    Case(
        "retry-later-on-the-last-attempt",
        plain,
        "plain_later_last",
        (("dead", None, "RetryLater"),),
        ("act",),
        then="later_10",
        attempts=(4,),
    ),
    Case("tenant-both-take", tenants, "tenants_six", (OK,), ("six", "six_or_twelve")),
    Case("tenant-one-takes", tenants, "tenants_twelve", (OK,), ("six_or_twelve",), tenant=12),
    Case("tenant-none-takes", tenants, "tenants_seven", (FILTERED,), (), tenant=7),
    Case("no-tenant", tenants, "tenants_none", (FILTERED,), (), tenant=None),
    Case("dedupe-twice", once, "once_twice", (OK, DUPLICATE), ("first", "second"), attempts=(1, 1)),
    Case(
        "dedupe-retry-runs-only-what-failed",
        once,
        "once_retried",
        (("retry", 1000.0, "RuntimeError"), OK, DUPLICATE),
        ("first", "second", "second"),
        then="fail_first",
        attempts=(1, 2, 2),
    ),
    Case(
        "dedupe-a-rejection-records-nothing",
        once,
        "once_rejected",
        (REJECTED, REJECTED),
        ("first", "second", "second"),
        then="reject",
        attempts=(1, 1),
    ),
]
IDS = [case.id for case in CASES]
assert len(set(IDS)) == len(IDS)
assert len({case.event for case in CASES}) == len(CASES)  # a routing key of its own each


def fate_of(outcome: Outcome) -> Fate:
    error = type(outcome.error).__name__ if outcome.error is not None else None
    return (outcome.status, outcome.delay, error)


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_deliver_gives_the_fate_in_the_table(case: Case) -> None:
    body, store = case.body(), MemoryDedupe()
    fates = [
        fate_of(await deliver(case.consumer, body, attempt=attempt, dedupe=store))
        for attempt in case.attempts
    ]
    assert (tuple(fates), tuple(RAN[parse(body).message_id])) == (case.fates, case.ran)


@pytest.mark.rabbit
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_worker_on_the_broker_gives_the_same_fate(
    case: Case, on_the_broker: dict[str, tuple[tuple[Fate, ...], tuple[str, ...]]]
) -> None:
    assert on_the_broker[case.id] == (case.fates, case.ran)


# ------------------------------------------------------------- the table on the broker


@pytest.fixture(scope="module")
def on_the_broker(
    broker_reachable: None, dedupe_database: str
) -> dict[str, tuple[tuple[Fate, ...], tuple[str, ...]]]:
    """Every case through one worker on a prefix of its own: fates and handlers, by case."""
    return asyncio.run(_run_table(f"test-{uuid.uuid4().hex[:12]}", dedupe_database))


async def _run_table(
    prefix: str, database: str
) -> dict[str, tuple[tuple[Fate, ...], tuple[str, ...]]]:
    connection, bus = await open_bus(prefix)
    for consumer in CONSUMERS:
        bus.forget_later(*consumer_queue_names(prefix, consumer))
    settings = WorkerSettings(
        amqp_url=Secret(AMQP_URL),
        bus_prefix=prefix,
        shutdown_timeout=5.0,
        metrics_port=0,
        dedupe_database_url=Secret(database),
    )
    worker = Worker(CONSUMERS, settings)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(15):
            await worker.ready.wait()
        bodies = {case.id: case.body() for case in CASES}
        fates: dict[str, list[Fate]] = defaultdict(list)
        for turn in range(max(len(case.attempts) for case in CASES)):
            batch = [case for case in CASES if len(case.attempts) > turn]
            before = _counts(worker)
            for case in batch:
                await _publish(bus, case, bodies[case.id], case.attempts[turn])
            where = await _settled(bus, worker, batch, before)
            for case in batch:
                fates[case.id].append(_fate(where, worker, before, case, bodies[case.id]))
    finally:
        stop.set()
        await running
        await bus.remove_all()
        await connection.close()
    return {
        case.id: (tuple(fates[case.id]), tuple(RAN[parse(bodies[case.id]).message_id]))
        for case in CASES
    }


async def _publish(bus: BusView, case: Case, body: bytes, attempt: int) -> None:
    """As the receiver publishes it; a later attempt as its retry copy comes back."""
    receipt = Receipt(str(uuid.uuid4()), AuthMethod.API_KEY, datetime.now(UTC))
    message = event_message(bus.names, parse(body), body, receipt)
    exchange, routing_key, properties = message.exchange, message.routing_key, message.properties
    if attempt > 1:
        properties.headers = {
            **(properties.headers or {}),
            ATTEMPT: attempt,
            ROUTING_KEY: routing_key,
        }
        exchange, routing_key = "", ConsumerQueues(bus.names.prefix, case.consumer.name).main
    underlay = await bus.channel.get_underlay_channel()
    await underlay.basic_publish(
        body, exchange=exchange, routing_key=routing_key, properties=properties, mandatory=True
    )


Counts = dict[tuple[str, str, str], float]


def _counts(worker: Worker) -> Counts:
    """The worker's `relay_consumer_messages_total`, by consumer, routing key and outcome."""
    return {
        (counted.labels["consumer"], counted.labels["routing_key"], counted.labels["outcome"]): (
            counted.value
        )
        for family in worker.metrics.messages.collect()
        for counted in family.samples
        if counted.name.endswith("_total")
    }


@dataclass
class _Where:
    """Where this turn's messages are, by message id."""

    retried: dict[str, tuple[float, str]]  # delay, x-error-type
    dead: dict[str, str]  # x-error-type
    unrouted: set[str]


async def _settled(bus: BusView, worker: Worker, batch: list[Case], before: Counts) -> _Where:
    """Wait until the worker has counted every message of `batch` it gets; say where each is."""
    bound = sum(1 for case in batch if case.consumer.routes_for(routing_key(case.event)))
    unbound = len(batch) - bound
    names = BusNames(bus.names.prefix)
    async with asyncio.timeout(20):
        while True:
            counted = sum(_counts(worker).values()) - sum(before.values())
            waiting = await _depth(bus.channel, names.unrouted)
            if counted >= bound and waiting >= unbound:
                break
            await asyncio.sleep(0.02)
    where = _Where({}, {}, set())
    for consumer in CONSUMERS:
        queues = ConsumerQueues(bus.names.prefix, consumer.name)
        for delay in consumer.retry_delays:
            for copy in await bus.drain(await bus.queue(queues.retry(delay))):
                where.retried[str(copy.message_id)] = (delay, _error(copy.headers))
        for letter in await bus.drain(await bus.queue(queues.dead)):
            where.dead[str(letter.message_id)] = _error(letter.headers)
    unrouted = await bus.drain(await bus.queue(names.unrouted))
    where.unrouted = {str(message.message_id) for message in unrouted}
    return where


async def _depth(channel: AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


def _error(headers: dict[str, Any]) -> str:
    return str(headers["x-error-type"])


def _fate(where: _Where, worker: Worker, before: Counts, case: Case, body: bytes) -> Fate:
    message_id = parse(body).message_id
    if message_id in where.unrouted:
        return UNBOUND
    if message_id in where.retried:
        delay, error = where.retried[message_id]
        return ("retry", delay, error)
    if message_id in where.dead:
        return ("dead", None, where.dead[message_id])
    # Acked: the worker's own count says how.
    key = (case.consumer.name, routing_key(case.event))
    [outcome] = [
        label[2]
        for label, value in _counts(worker).items()
        if label[:2] == key and value > before.get(label, 0)
    ]
    return (outcome, None, None)
