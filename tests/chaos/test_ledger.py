"""The ledger's rules, on made-up runs: a balanced run balances, and each kind of harm counts."""

from __future__ import annotations

import uuid
from collections import Counter

from consumers import history
from tests.chaos.handlers import once, picky, plain, retiring
from tests.chaos.handlers.common import rejected
from tests.chaos.ledger import Ledger, Seen, binds, missing, reconcile
from tests.chaos.plan import KINDS


def _sent(per_kind: int = 40) -> dict[str, str]:
    return {str(uuid.uuid4()): kind for kind in KINDS for _ in range(per_kind)}


def _perfect(kinds: dict[str, str]) -> Seen:
    """What a run that lost nothing leaves: each consumer handled what it binds, once."""
    handled: dict[str, Counter[str]] = {}
    for consumer in (plain.consumer, once.consumer, retiring.consumer, history.consumer):
        handled[consumer.name] = Counter(c for c, k in kinds.items() if binds(consumer, k))
    handled["heir"] = Counter()
    meant = {c for c, k in kinds.items() if binds(picky.consumer, k) and rejected("picky", c)}
    handled["picky"] = Counter(
        c for c, k in kinds.items() if binds(picky.consumer, k) and c not in meant
    )
    return Seen(handled, {"picky": sorted(meant)}, [], 0)


def _totals(ledger: Ledger) -> tuple[int, int, int]:
    return ledger.lost, ledger.duplicated, ledger.unexplained


def test_a_run_that_lost_nothing_balances() -> None:
    kinds = _sent()
    seen = _perfect(kinds)
    assert seen.dead["picky"]  # the sample holds rejected events, or this proves little
    ledger = reconcile(kinds, set(kinds), 0, 0, seen)
    assert _totals(ledger) == (0, 0, 0)
    assert ledger.accepted == len(kinds)
    assert missing(kinds, set(kinds), seen) == 0


def test_an_event_acked_without_running_is_lost() -> None:
    kinds = _sent()
    seen = _perfect(kinds)
    skipped = next(iter(seen.handled["plain"]))
    del seen.handled["plain"][skipped]
    ledger = reconcile(kinds, set(kinds), 0, 0, seen)
    assert _totals(ledger) == (1, 0, 0)
    assert missing(kinds, set(kinds), seen) == 1


def test_duplicates_count_only_where_the_guarantee_is_once() -> None:
    kinds = _sent()
    seen = _perfect(kinds)
    for name in ("plain", "picky", "once", "history"):
        seen.handled[name][next(iter(seen.handled[name]))] += 1
    ledger = reconcile(kinds, set(kinds), 0, 0, seen)
    assert _totals(ledger) == (0, 2, 0)  # once and history promise once per id


def test_an_unexpected_dead_letter_and_a_bound_event_in_unrouted_are_unexplained() -> None:
    kinds = _sent()
    seen = _perfect(kinds)
    bound = next(c for c, k in kinds.items() if k == "placement_updated")
    dead = {**seen.dead, "once": [bound]}
    ledger = reconcile(
        kinds, set(kinds), 0, 0, Seen(seen.handled, dead, [*seen.unrouted, bound], 0)
    )
    assert _totals(ledger) == (0, 0, 2)


def test_a_rejected_event_missing_from_the_dead_letters_is_lost() -> None:
    kinds = _sent()
    seen = _perfect(kinds)
    ledger = reconcile(kinds, set(kinds), 0, 0, Seen(seen.handled, {}, seen.unrouted, 0))
    assert ledger.lost == len(seen.dead["picky"])


def test_the_heir_covers_what_the_retired_consumer_left() -> None:
    kinds = _sent()
    seen = _perfect(kinds)
    moved = Counter(list(seen.handled["retiring"])[::2])
    seen.handled["heir"] = moved
    seen.handled["retiring"] -= moved
    assert _totals(reconcile(kinds, set(kinds), 0, 0, seen)) == (0, 0, 0)
    seen.handled["heir"] = Counter()
    assert reconcile(kinds, set(kinds), 0, 0, seen).lost == len(moved)


def test_what_the_sender_gave_up_on_is_not_lost_and_not_expected() -> None:
    kinds = _sent()
    seen = _perfect(kinds)
    given_up = {c for c, k in kinds.items() if k == "talent_created"}
    for counter in seen.handled.values():
        for cid in given_up:
            counter.pop(cid, None)
    accepted = set(kinds) - given_up
    ledger = reconcile(kinds, accepted, len(given_up), 0, seen)
    assert _totals(ledger) == (0, 0, 0)
    assert ledger.accepted == len(kinds) - len(given_up)


def test_a_final_answer_that_avionte_would_not_retry_is_unexplained() -> None:
    kinds = _sent()
    ledger = reconcile(kinds, set(kinds), 0, 1, _perfect(kinds))
    assert _totals(ledger) == (0, 0, 1)
