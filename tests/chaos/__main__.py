"""`make chaos`: run the whole system under seeded random faults, then balance the ledger.

CHAOS_SECONDS (default 120) long, CHAOS_SEED (random when unset, printed first),
CHAOS_RATE deliveries a second (default 15). Exit 0 when the ledger balances, 1 when
something was lost, duplicated past its guarantee or unexplained, 2 when the run itself
could not be carried out (a fault that could not be injected or undone). The work
directory, with every process's log, is kept when the run fails or CHAOS_KEEP=1.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from tests.chaos import collect, faults, operators, stuck
from tests.chaos.ledger import HEADER, Ledger, Seen, missing, reconcile
from tests.chaos.plan import FAULTS, Action, Plan, make_plan
from tests.chaos.record import Journal
from tests.chaos.sender import Outcomes, send_all
from tests.chaos.system import System, running_system

T = TypeVar("T")
DRAIN_SECONDS = 300.0
# However the run goes, it ends: the plan, then at most this long for everything else.
OVERTIME_SECONDS = 900.0
# Draining ends early when nothing more is handled for this long (a worker killed
# mid-handling holds its dedupe claim for DEDUPE_LEASE, 30 s by default).
IDLE_SECONDS = 45.0
SETTLE_SECONDS = 5.0


def _setting(name: str, default: float, cast: Callable[[str], float]) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = cast(text)
    except ValueError:
        sys.exit(f"error: {name} must be a number, got {text!r}")
    if value < 0:
        sys.exit(f"error: {name} must not be negative, got {text!r}")
    return value


async def _at(journal: Journal, at: float, run: Callable[[], Awaitable[None]], what: str) -> None:
    await asyncio.sleep(max(0.0, at - journal.now()))
    try:
        await run()
    except Exception as exc:  # the harness failed, not the system: the run is void
        done = journal.begin(what, "", at)
        journal.end(done, f"HARNESS FAILED: {type(exc).__name__}: {exc}")
        journal.void = True


async def _restore(system: System) -> None:
    """Undo anything a fault left: every node up and unalarmed, links open, disk free."""
    for index in sorted(system.down):
        await system.node_up(index)
    for node in system.cluster.nodes:
        await asyncio.to_thread(node.memory_alarm, False)
    for slot in system.receivers:
        for proxy in slot.proxies:
            proxy.refuse(False)
            proxy.resume()
        if slot.disk is not None:
            slot.disk.free()
    assert system.postgres is not None
    system.postgres.refuse(False)
    system.postgres.answer(None)


async def _drain(system: System, plan: Plan, outcomes: Outcomes, journal: Journal) -> None:
    """Wait until the spools are empty and every accepted event is handled, then settle."""
    kinds = {d.correlation_id: d.kind for d in plan.deliveries}
    done = journal.begin("drain", "", journal.now())
    deadline = time.monotonic() + DRAIN_SECONDS
    left, progress, moved = -1, -1, time.monotonic()
    while time.monotonic() < deadline:
        spooled = await system.spooled()
        handled = await collect.handlings(system)
        left = missing(kinds, outcomes.accepted, Seen(handled, {}, (), 0))
        if spooled == 0 and left == 0:
            break
        total = sum(sum(counter.values()) for counter in handled.values())
        if total != progress or spooled != 0:
            progress, moved = total, time.monotonic()
        elif time.monotonic() - moved > IDLE_SECONDS:
            if not await _release_held_back(system, journal):
                break
            moved = time.monotonic()
        await asyncio.sleep(1.0)
    await asyncio.sleep(SETTLE_SECONDS)  # late duplicates and dead letters
    journal.end(done, f"{left} accepted event(s) still unhandled" if left else "drained")


async def _release_held_back(system: System, journal: Journal) -> bool:
    """Release retries RabbitMQ holds back (see `stuck`); False when there are none."""
    found = await stuck.held_back(system)
    for leader in sorted({held.queue_leader for held in found}):
        queues = ", ".join(f"{h.queue} ({h.count})" for h in found if h.queue_leader == leader)
        done = journal.begin("release-held-back", leader.split("@")[0], journal.now())
        await stuck.release(system, leader)
        journal.end(done, f"restarted the app leading {queues}")
        journal.held_back += sum(h.count for h in found if h.queue_leader == leader)
    return bool(found)


async def run(plan: Plan, workdir: Path) -> tuple[Ledger, Journal]:
    outcomes = Outcomes()
    async with running_system(workdir) as system:
        journal = Journal()
        urls = [slot.url for slot in system.receivers]
        sending = asyncio.create_task(send_all(urls, plan.deliveries, outcomes))
        acts = []
        for action in plan.actions:
            act = faults.inject if action.what in FAULTS else operators.command
            acts.append(_at(journal, action.at, _bind(act, system, action, journal), action.what))
        acts.append(
            _at(
                journal,
                plan.retire_at,
                lambda: operators.retire(system, plan.retire_at, journal),
                "retire",
            )
        )
        await asyncio.gather(*acts)
        await sending
        await _restore(system)
        await _drain(system, plan, outcomes, journal)
        codes = await system.stop_tails()
        done = journal.begin("tail x2", "every event", 0.0)
        printed = ", ".join(str(len(ids & outcomes.accepted)) for ids in system.tailed())
        exits = ", ".join(str(code) for code in codes)
        journal.end(done, f"exit {exits}; accepted events printed: {printed}")
        # The faults are over: an operator opening the console now must get every page.
        done = journal.begin("console-after", "4 pages", journal.now())
        journal.console_after = await operators.look(system)
        journal.end(done, journal.console_after)
        handled = await collect.handlings(system)
        dead, unrouted, invalid = await collect.held(system)
    kinds = {d.correlation_id: d.kind for d in plan.deliveries}
    seen = Seen(handled, dead, unrouted, invalid)
    ledger = reconcile(
        kinds, outcomes.accepted, len(outcomes.given_up), len(outcomes.refused), seen
    )
    ledger.answers = dict(outcomes.answers)
    return ledger, journal


def _bind(
    act: Callable[[System, Action, Journal], Awaitable[None]],
    system: System,
    action: Action,
    journal: Journal,
) -> Callable[[], Awaitable[None]]:
    return lambda: act(system, action, journal)


async def _bounded(work: Awaitable[T], seconds: float) -> T:
    async with asyncio.timeout(seconds):
        return await work


def main() -> int:
    seconds = _setting("CHAOS_SECONDS", 120.0, float)
    seed = int(_setting("CHAOS_SEED", random.randrange(1, 2**31), int))
    rate = _setting("CHAOS_RATE", 15.0, float)
    print(f"chaos: seed={seed} seconds={seconds:g} rate={rate:g}/s", flush=True)
    if os.environ.get("CHAOS_BREAK"):
        print(f"chaos: a deliberately broken build (CHAOS_BREAK={os.environ['CHAOS_BREAK']})")
    plan = make_plan(seed, seconds, rate)
    print(
        f"chaos: {len(plan.deliveries)} deliveries, {len(plan.actions)} faults and commands,"
        f" retirement at {plan.retire_at:.1f} s; starting a three-node cluster",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="relay-chaos-"))
    try:
        ledger, journal = asyncio.run(_bounded(run(plan, workdir), seconds + OVERTIME_SECONDS))
    except TimeoutError:
        print(f"chaos: the run is void: it did not end within {seconds + OVERTIME_SECONDS:.0f} s")
        print(f"chaos: logs kept in {workdir}")
        return 2
    except Exception as exc:  # the system could not be started or read back
        traceback.print_exc()
        print(f"chaos: the run is void: {type(exc).__name__}: {exc}")
        print(f"chaos: logs kept in {workdir}")
        return 2
    print("\n".join(journal.table()))
    print()
    print(HEADER)
    for row in (*ledger.rows, ledger.unrouted):
        print(row.line())
    print(f"sender: answers {ledger.answers}; gave up on {ledger.given_up} (never accepted)")
    if journal.held_back:
        print(
            f"held back: {journal.held_back} retried message(s) stayed in a retry queue's"
            " dead-letter stage after a node failure until its leader moved"
            " (docs/operating/runbooks/stuck-retries.md)"
        )
    injected = sum(1 for entry in journal.entries if entry.what in FAULTS)
    print(
        f"ledger: seed={seed} sent={ledger.sent} accepted={ledger.accepted} lost={ledger.lost}"
        f" duplicated={ledger.duplicated} unexplained={ledger.unexplained} faults={injected}"
    )
    console_ok = journal.console_after == operators.ALL_PAGES
    if not console_ok:
        print(f"console: after the faults it answered {journal.console_after}, not every page")
    failed = ledger.lost or ledger.duplicated or ledger.unexplained or not console_ok
    if failed or journal.void or os.environ.get("CHAOS_KEEP") == "1":
        print(f"chaos: logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if journal.void:
        print("chaos: the run is void: the harness could not carry out its plan", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
