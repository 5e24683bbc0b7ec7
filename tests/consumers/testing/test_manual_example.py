"""A consumer's tests with consumers.testing: no broker, no database, no network."""

from typing import Any

import pytest

from consumers import Consumer, Event, Reject
from consumers.avionte import EntityGone, avionte
from consumers.testing import avionte_api, deliver, sample

# Needs pytest-asyncio; with `asyncio_mode = "auto"` in your pytest settings, drop this line.
pytestmark = pytest.mark.asyncio

# The consumer under test. In your project it is a module of its own, imported here.
consumer = Consumer("payroll-sync", retry_delays=(5, 30, 120), dedupe=True)
synced: list[dict[str, Any]] = []


@consumer.on("placement_started", "placement_updated", tenants=[6, 12])
async def sync(event: Event) -> None:
    try:
        placement = await avionte().fetch(event)
    except EntityGone:
        return  # deleted since the event: nothing to sync
    if placement["Status"] == "Cancelled":
        raise Reject("a cancelled placement is not paid")
    synced.append(placement)


PLACEMENTS = {
    "placement": {
        86635: {"PlacementId": 86635, "Status": "Active"},
        7: {"PlacementId": 7, "Status": "Cancelled"},
    }
}


async def test_an_update_fetches_the_placement_and_syncs_it() -> None:
    async with avionte_api(PLACEMENTS) as api:
        outcome = await deliver(consumer, sample("placement_updated", tenant=6, PlacementId=86635))
    assert outcome.status == "ok"
    assert synced[-1] == {"PlacementId": 86635, "Status": "Active"}
    assert [(call.path, call.tenant) for call in api.calls] == [("placement/86635", "6")]


async def test_the_same_event_twice_is_handled_once() -> None:
    event = sample("placement_started", tenant=12, PlacementId=86635)
    async with avionte_api(PLACEMENTS) as api:
        first = await deliver(consumer, event)
        again = await deliver(consumer, event)
    assert (first.status, again.status) == ("ok", "duplicate")
    assert len(api.calls) == 1


async def test_other_tenants_and_other_events_are_left_alone() -> None:
    other_tenant = await deliver(consumer, sample("placement_updated", tenant=7))
    other_event = await deliver(consumer, sample("talent_created", tenant=6))
    assert (other_tenant.status, other_event.status) == ("filtered", "unbound")


async def test_a_rate_limited_fetch_is_retried_after_avionte_s_back_off() -> None:
    event = sample("placement_updated", tenant=6, PlacementId=86635)
    async with avionte_api(PLACEMENTS, fail={"placement/86635": 429}):
        outcome = await deliver(consumer, event)
    assert (outcome.status, outcome.delay) == ("retry", 5)


async def test_avionte_down_at_the_last_attempt_leaves_a_dead_letter() -> None:
    event = sample("placement_updated", tenant=6, PlacementId=86635)
    async with avionte_api(PLACEMENTS, fail={"placement/86635": [503, 503]}):
        retried = await deliver(consumer, event, attempt=3)
        dead = await deliver(consumer, event, attempt=4)
    assert (retried.status, retried.delay) == ("retry", 120)
    assert dead.status == "dead"


async def test_a_cancelled_placement_is_rejected_and_a_deleted_one_ignored() -> None:
    async with avionte_api(PLACEMENTS):  # placement 13 is not there: a 404
        cancelled = await deliver(consumer, sample("placement_updated", tenant=6, PlacementId=7))
        deleted = await deliver(consumer, sample("placement_updated", tenant=6, PlacementId=13))
    assert (cancelled.status, type(cancelled.error)) == ("dead", Reject)
    assert deleted.status == "ok"
