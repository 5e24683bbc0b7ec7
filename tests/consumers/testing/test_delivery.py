"""`deliver` beyond the table of fates: what handlers see, what it refuses, what it shares."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from consumers import Consumer, Event
from consumers.testing import MemoryDedupe, deliver, sample
from service.shared.samples import encoded

seen: list[Event] = []
recorder = Consumer("recorder", retry_delays=(1, 2))


@recorder.on("#")
async def record(event: Event) -> None:
    seen.append(event)


async def test_the_handler_sees_the_event_a_worker_would_hand_it() -> None:
    body = b'{"EventName": "VMS_job_created", "FrontOfficeTenantId": "6",\n "Resource": "{}"}'
    outcome = await deliver(recorder, body, attempt=2)
    assert (outcome.status, outcome.error, outcome.delay) == ("ok", None, None)
    event = seen[-1]
    assert (event.name, event.routing_key, event.tenant_id) == (
        "VMS_job_created",
        "vms.job.created",
        6,
    )
    assert event.body == body  # byte for byte
    assert (event.attempt, event.redelivered, event.resource) == (2, False, {})
    assert event.headers["x-event-name"] == "VMS_job_created"
    assert event.headers["x-tenant-id"] == 6
    assert event.headers["x-attempt"] == 2
    assert datetime.now(UTC) - event.received_at < timedelta(seconds=5)


async def test_a_dict_is_delivered_as_its_json_with_the_message_id_the_receiver_gives() -> None:
    event = {**sample("contact_created", tenant=12), "DeduplicationId": "contact-1"}
    await deliver(recorder, event)
    delivered = seen[-1]
    assert delivered.payload == json.loads(encoded(event))
    assert (delivered.message_id, delivered.correlation_id) == ("contact-1", event["CorrelationId"])


async def test_what_the_receiver_would_quarantine_or_no_event_is_refused() -> None:
    with pytest.raises(ValueError, match="quarantines it \\(no_event_name\\)"):
        await deliver(recorder, b'{"FrontOfficeTenantId": 6}')
    with pytest.raises(ValueError, match="not_json"):
        await deliver(recorder, b"{")
    with pytest.raises(TypeError, match="dict or the body's bytes"):
        await deliver(recorder, "{}")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attempt counts from 1"):
        await deliver(recorder, sample("talent_created"), attempt=0)


starts: list[str] = []
started = Consumer("started")


@started.on_start
async def open_pool() -> None:
    starts.append("started")


@started.on("#")
async def needs_the_pool(event: Event) -> None:
    assert starts, "on_start ran first"


async def test_on_start_hooks_run_once_before_the_first_delivery() -> None:
    starts.clear()
    for _ in range(3):
        assert (await deliver(started, sample("talent_created"))).status == "ok"
    assert starts == ["started"]


ran: list[str] = []
once = Consumer("once", dedupe=True)


@once.on("#")
async def slow(event: Event) -> None:
    ran.append(event.message_id)
    await asyncio.sleep(0.05)


async def test_one_id_delivered_twice_at_once_runs_once_and_the_other_is_a_duplicate() -> None:
    event = sample("talent_saved")
    outcomes = await asyncio.gather(deliver(once, event), deliver(once, event))
    assert sorted(outcome.status for outcome in outcomes) == ["duplicate", "ok"]
    assert ran.count(event["CorrelationId"]) == 1


@pytest.mark.parametrize("test", ["first", "second"])
async def test_each_test_has_a_dedupe_store_of_its_own(test: str) -> None:
    event = {**sample("talent_saved"), "DeduplicationId": "the-same-in-both-tests"}
    assert (await deliver(once, event)).status == "ok"
    assert (await deliver(once, event)).status == "duplicate"


async def test_a_store_of_your_own_is_kept_apart_and_can_be_asked() -> None:
    event = sample("talent_saved")
    mine = MemoryDedupe()
    assert (await deliver(once, event, dedupe=mine)).status == "ok"
    assert mine.done("once", event["CorrelationId"])
    assert (await deliver(once, event)).status == "ok"  # the shared one had not seen it
    assert (await deliver(once, event, dedupe=mine)).status == "duplicate"


async def test_without_dedupe_every_delivery_runs_and_optional_dedupes_as_with_a_database() -> None:
    event = sample("talent_saved")
    assert [(await deliver(recorder, event)).status for _ in range(2)] == ["ok", "ok"]
    optional = Consumer("optional", dedupe="optional")
    optional.on("#")(record)
    assert [(await deliver(optional, event)).status for _ in range(2)] == ["ok", "duplicate"]
