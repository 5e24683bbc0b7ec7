"""`avionte_api`: the client pointed at a stand-in for a block, trouble on request, then back."""

from __future__ import annotations

import os

import pytest

from consumers import Consumer, Event
from consumers.avionte import AvionteUnavailable, EntityGone, avionte
from consumers.testing import avionte_api, deliver, sample
from consumers.testing.avionte import Answer

fetched: list[dict[str, object]] = []
fetcher = Consumer("fetcher", retry_delays=(5, 30, 60))


@fetcher.on("placement.#", "talent.#")
async def fetch(event: Event) -> None:
    fetched.append(await avionte().fetch(event))


async def test_the_client_is_pointed_at_it_for_the_block_and_back_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AVIONTE_API_URL", "https://api.example.invalid")
    monkeypatch.delenv("AVIONTE_CLIENT_ID", raising=False)
    for talent in (1, 2):  # one block after another: each gets a client of its own
        async with avionte_api({"talent": {talent: {"TalentId": talent}}}) as api:
            assert os.environ["AVIONTE_API_URL"] == api.url
            outcome = await deliver(fetcher, sample("talent_saved", tenant=6, TalentId=talent))
            assert outcome.status == "ok"
            assert fetched[-1] == {"TalentId": talent}
            assert (api.token_requests, api.problems) == (1, [])
    assert os.environ["AVIONTE_API_URL"] == "https://api.example.invalid"
    assert "AVIONTE_CLIENT_ID" not in os.environ


async def test_failures_are_answered_in_turn_then_the_entity() -> None:
    entities = {"placement": {"13": {"PlacementId": 13}}}
    event = sample("placement_updated", tenant=6, PlacementId=13)
    trouble: dict[str, list[Answer]] = {"placement/13": [503, (429, {"Retry-After": "40"}), 500]}
    async with avionte_api(entities, fail=trouble) as api:
        outcomes = [await deliver(fetcher, event, attempt=n) for n in (1, 2, 3, 4)]
    assert [(o.status, o.delay) for o in outcomes] == [
        ("retry", 5),
        ("retry", 60),  # the first delay of 40 s or more
        ("retry", 60),
        ("ok", None),
    ]
    assert all(isinstance(o.error, AvionteUnavailable) for o in outcomes[:3])
    assert len(api.for_path("placement/13")) == 4


async def test_an_entity_not_given_is_gone() -> None:
    async with avionte_api({"placement": {1: {"PlacementId": 1}}}):
        outcome = await deliver(fetcher, sample("placement_updated", tenant=6, PlacementId=2))
    assert (outcome.status, type(outcome.error)) == ("dead", EntityGone)
