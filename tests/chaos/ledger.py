"""The ledger: every delivery the sender made, accounted for once everything has drained.

For each consumer, the events it must have handled are those answered `200` whose
routing key it binds. `lost` counts those it never handled (or, for a share rejected on
purpose, that are not among its dead letters); `duplicates` counts handlings past the
first, a failure only where the guarantee is once (`dedupe`); `unexplained` counts what
no rule accounts for: a dead letter not rejected on purpose, an event in `.unrouted`
that a consumer binds, a handling of an event that was never sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from consumers import Consumer, history
from service.shared.envelope import routing_key
from tests.chaos.handlers import heir, once, picky, plain, retiring
from tests.chaos.handlers.common import rejected

# The consumers the ledger checks. `retiring` and `heir` together are one line: what
# was waiting for the first when it was retired moves to the second.
EXACTLY_ONCE = {"once", "history"}
PERMANENT: tuple[Consumer, ...] = (
    plain.consumer,
    once.consumer,
    picky.consumer,
    history.consumer,
)
SUCCESSION = (retiring.consumer, heir.consumer)
REJECTING = {"picky"}


@dataclass
class Row:
    consumer: str
    accepted: int = 0
    handled: int = 0
    duplicates: int = 0
    lost: int = 0
    dead_expected: int = 0
    dead_unexpected: int = 0
    unexplained: int = 0

    def line(self) -> str:
        return (
            f"{self.consumer:<16} {self.accepted:8d} {self.handled:8d} {self.duplicates:10d}"
            f" {self.lost:5d} {self.dead_expected:13d} {self.dead_unexpected:15d}"
        )


HEADER = (
    f"{'consumer':<16} {'accepted':>8} {'handled':>8} {'duplicates':>10} {'lost':>5}"
    f" {'dead expected':>13} {'dead unexpected':>15}"
)


@dataclass(frozen=True)
class Seen:
    """What the run left behind: handlings per consumer, dead letters, `.unrouted`."""

    handled: dict[str, Counter[str]]
    dead: Mapping[str, Collection[str]]
    unrouted: Collection[str]
    invalid: int


@dataclass
class Ledger:
    rows: list[Row]
    sent: int
    accepted: int
    given_up: int
    refused: int
    unrouted: Row
    answers: dict[int | str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return sum(row.lost for row in self.rows) + self.unrouted.lost

    @property
    def duplicated(self) -> int:
        return sum(row.duplicates for row in self.rows if row.consumer in EXACTLY_ONCE)

    @property
    def unexplained(self) -> int:
        rows = [*self.rows, self.unrouted]
        return self.refused + sum(row.unexplained + row.dead_unexpected for row in rows)


def binds(consumer: Consumer, kind: str) -> bool:
    return bool(consumer.routes_for(routing_key(kind)))


def reconcile(
    kinds: Mapping[str, str], accepted: Collection[str], given_up: int, refused: int, seen: Seen
) -> Ledger:
    """`kinds` maps every sent message id to its event; `accepted` are those answered 200."""
    accepted = set(accepted)
    rows = [_permanent(consumer, kinds, accepted, seen) for consumer in PERMANENT]
    rows.append(_succession(kinds, accepted, seen))
    unrouted = _unrouted(kinds, accepted, seen)
    return Ledger(rows, len(kinds), len(accepted), given_up, refused, unrouted)


def missing(kinds: Mapping[str, str], accepted: Collection[str], seen: Seen) -> int:
    """Accepted events some consumer has not handled yet (dead letters aside): 0 when drained."""
    count = 0
    for consumer in PERMANENT:
        handled = seen.handled.get(consumer.name, Counter())
        for cid in accepted:
            if binds(consumer, kinds[cid]) and cid not in handled:
                count += not (consumer.name in REJECTING and rejected(consumer.name, cid))
    either = Counter(seen.handled.get(retiring.consumer.name, Counter()))
    either.update(seen.handled.get(heir.consumer.name, Counter()))
    return count + sum(
        1 for cid in accepted if binds(retiring.consumer, kinds[cid]) and cid not in either
    )


def _permanent(consumer: Consumer, kinds: Mapping[str, str], accepted: set[str], seen: Seen) -> Row:
    name = consumer.name
    handled = seen.handled.get(name, Counter())
    dead = set(seen.dead.get(name, ()))
    expected = {cid for cid in accepted if binds(consumer, kinds[cid])}
    refusing = name in REJECTING
    meant_dead = {cid for cid in expected if refusing and rejected(name, cid)}
    # A delivery the sender gave up on may have been stored all the same.
    may_be_dead = {
        cid
        for cid, kind in kinds.items()
        if refusing and binds(consumer, kind) and rejected(name, cid)
    }
    row = Row(name, accepted=len(expected))
    row.handled = len(set(handled) & expected)
    row.duplicates = sum(count - 1 for count in handled.values())
    row.lost = len(expected - meant_dead - set(handled)) + len(meant_dead - dead)
    row.dead_expected = len(meant_dead & dead)
    row.dead_unexpected = len(dead - may_be_dead)
    row.unexplained = _strangers(consumer, handled, kinds) + len(set(handled) & meant_dead)
    return row


def _succession(kinds: Mapping[str, str], accepted: set[str], seen: Seen) -> Row:
    first, second = SUCCESSION
    handled = Counter(seen.handled.get(first.name, Counter()))
    handled.update(seen.handled.get(second.name, Counter()))
    expected = {cid for cid in accepted if binds(first, kinds[cid])}
    dead = set(seen.dead.get(first.name, ())) | set(seen.dead.get(second.name, ()))
    row = Row(f"{first.name}>{second.name}", accepted=len(expected))
    row.handled = len(set(handled) & expected)
    row.duplicates = sum(count - 1 for count in handled.values())
    row.lost = len(expected - set(handled))
    row.dead_unexpected = len(dead)
    row.unexplained = _strangers(first, handled, kinds)
    return row


def _unrouted(kinds: Mapping[str, str], accepted: set[str], seen: Seen) -> Row:
    every = (*PERMANENT, *SUCCESSION)
    unbound = {cid for cid in accepted if not any(binds(c, kinds[cid]) for c in every)}
    held = set(seen.unrouted)
    row = Row(".unrouted", accepted=len(unbound))
    row.handled = len(held & unbound)
    row.lost = len(unbound - held)
    # Held but bound (or never sent): routing failed somewhere. Given-up deliveries the
    # receiver stored anyway are fine, if unbound.
    row.unexplained = sum(
        1 for cid in held if cid not in kinds or any(binds(c, kinds[cid]) for c in every)
    )
    row.unexplained += seen.invalid
    return row


def _strangers(consumer: Consumer, handled: Counter[str], kinds: Mapping[str, str]) -> int:
    """Handlings of events never sent, or of events this consumer does not bind."""
    return sum(1 for cid in handled if cid not in kinds or not binds(consumer, kinds[cid]))
