"""The seeded plan of a chaos run: every delivery and every fault, decided before it starts.

The same seed and length give the same plan; what actually happened (a fault that had
to wait for another of its kind, a command's exit code) is in the run's report.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

# Fixture name -> share of deliveries. `contact_updated` is bound by no consumer but the
# history. `company_address_created` is the retired consumer's.
KINDS = {
    "placement_updated": 4,
    "placement_started": 1,
    "talent_created": 2,
    "talent_merged": 1,
    "company_updated": 1,
    "company_address_created": 2,
    "contact_updated": 1,
}
TENANTS = (6, 12, 31)

FAULTS = (
    "node-kill",
    "memory-alarm",
    "link-cut",
    "link-stall",
    "receiver-kill",
    "receiver-stop",
    "worker-kill",
    "postgres-down",
    "postgres-starting",
    "spool-full",
)
COMMANDS = (
    "dead",
    "replay",
    "reroute",
    "console-look",
    "console-replay",
    "console-reroute",
    "history-replay",
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event the sender posts at `at` seconds, first to receiver `receiver`."""

    at: float
    kind: str
    tenant: int
    correlation_id: str
    receiver: int


@dataclass(frozen=True, slots=True)
class Action:
    """A fault (for `seconds`) or an operator's command, at `at` seconds into the run."""

    at: float
    what: str
    target: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Plan:
    seed: int
    seconds: float
    deliveries: tuple[Delivery, ...]
    actions: tuple[Action, ...]
    retire_at: float


def make_plan(seed: int, seconds: float, rate: float) -> Plan:
    """Deliveries at about `rate` a second, and a fault starting every ~6 s on average."""
    rng = random.Random(seed)
    kinds, weights = zip(*KINDS.items(), strict=True)
    deliveries = []
    at = 0.0
    while True:
        at += rng.expovariate(rate)
        if at >= seconds:
            break
        deliveries.append(
            Delivery(
                at=at,
                kind=rng.choices(kinds, weights)[0],
                tenant=rng.choice(TENANTS),
                correlation_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                receiver=rng.randrange(2),
            )
        )
    actions = []
    at = 3.0
    while True:
        at += rng.expovariate(1 / 6)
        if at >= seconds - 3:
            break
        actions.append(Action(at, rng.choice(FAULTS), rng.randrange(3), rng.uniform(2, 10)))
    at = 5.0
    while True:
        at += rng.expovariate(1 / 10)
        if at >= seconds - 3:
            break
        actions.append(Action(at, rng.choice(COMMANDS), rng.randrange(2), 0.0))
    actions.sort(key=lambda action: action.at)
    retire_at = seconds * rng.uniform(0.3, 0.6)
    return Plan(seed, seconds, tuple(deliveries), tuple(actions), retire_at)
