"""The placement_sync example, unit-tested with `consumers.testing` only: no broker, no network."""

from __future__ import annotations

import pytest

from consumers import Reject, placement_sync
from consumers.avionte import AvionteUnavailable
from consumers.testing import avionte_api, deliver, sample

consumer = placement_sync.consumer
PLACEMENTS = {"placement": {86635: {"PlacementId": 86635, "Status": "Active"}}}


async def test_each_placement_event_is_fetched_from_avionte_for_its_tenant() -> None:
    async with avionte_api(PLACEMENTS) as api:
        for name in ("placement_started", "placement_updated", "placement_extension_deleted"):
            event = sample(name, tenant=6, PlacementId=86635)
            assert (await deliver(consumer, event)).status == "ok"
    assert [(call.path, call.tenant) for call in api.calls] == [("placement/86635", "6")] * 3
    assert api.problems == []


async def test_a_redelivered_event_is_fetched_once() -> None:
    event = sample("placement_updated", tenant=6, PlacementId=86635)
    async with avionte_api(PLACEMENTS) as api:
        outcomes = [await deliver(consumer, event) for _ in range(2)]
    assert [outcome.status for outcome in outcomes] == ["ok", "duplicate"]
    assert len(api.calls) == 1


async def test_a_deleted_placement_is_nothing_to_sync() -> None:
    async with avionte_api({"placement": {}}) as api:
        outcome = await deliver(consumer, sample("placement_updated", tenant=6, PlacementId=404))
    assert outcome.status == "ok"
    assert [call.path for call in api.calls] == ["placement/404"]


async def test_avionte_busy_is_retried_after_its_back_off_and_dead_at_the_last_attempt() -> None:
    event = sample("placement_updated", tenant=6, PlacementId=86635)
    async with avionte_api(PLACEMENTS, fail={"placement/86635": [429, 502]}):
        busy = await deliver(consumer, event)
        down = await deliver(consumer, event, attempt=len(consumer.retry_delays) + 1)
        recovered = await deliver(consumer, event, attempt=2)
    assert (busy.status, busy.delay, type(busy.error)) == ("retry", 5, AvionteUnavailable)
    assert (down.status, recovered.status) == ("dead", "ok")


async def test_an_event_without_a_placement_id_is_rejected_and_others_are_not_bound() -> None:
    no_id = await deliver(consumer, sample("placement_started", tenant=6, PlacementId="x"))
    assert (no_id.status, type(no_id.error)) == ("dead", Reject)
    assert (await deliver(consumer, sample("talent_created"))).status == "unbound"


async def test_without_the_api_configured_it_syncs_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AVIONTE_CLIENT_ID", raising=False)
    outcome = await deliver(consumer, sample("placement_updated", tenant=6, PlacementId=1))
    assert outcome.status == "ok"
