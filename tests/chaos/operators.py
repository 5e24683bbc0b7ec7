"""Operators at work during the run: the CLI's commands and the console, as people use them.

Every command runs as its own process against all three nodes' URLs, at the same
time as the faults. Its exit code goes into the run's table; the ledger decides
whether anything was lost.
"""

from __future__ import annotations

import asyncio
import re
import signal

import aiohttp

from tests.chaos.plan import Action
from tests.chaos.record import Journal
from tests.chaos.system import System
from tests.consoles import PASSWORD, USER
from tests.worker_processes import run_cli

_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


async def command(system: System, action: Action, journal: Journal) -> None:
    """Run one operator's action from the plan."""
    target = _TARGETS.get(action.what, "")
    if action.what == "history-replay":
        target = _HISTORY_TO[action.target % len(_HISTORY_TO)]
    done = journal.begin(action.what, target, action.at)
    if action.what.startswith("console"):
        result = await _console(system, action.what)
    elif action.what == "history-replay":
        result = await _cli(system, "history", "replay", target, "--since", "60s")
    else:
        result = await _cli(system, *_ARGS[action.what])
    journal.end(done, result)


_ARGS = {"dead": ("dead", "picky"), "replay": ("replay", "picky"), "reroute": ("reroute",)}
# `history replay` of the last minute, to the exactly-once consumer or to the rejecting one.
_HISTORY_TO = ("once", "picky")
_TARGETS = {
    "dead": "picky",
    "replay": "picky",
    "console-replay": "picky",
    "console-look": "4 pages",
    "reroute": "unrouted",
    "console-reroute": "unrouted",
}


async def _cli(system: System, *args: str) -> str:
    env = {
        "AMQP_URL": system.amqp_url,
        "LOG_FORMAT": "json",
        "HISTORY_DATABASE_URL": system.database_url,
    }
    try:
        code, out, err = await run_cli(env, *args)
    except TimeoutError:
        return "no answer in 60 s"
    said = (out.strip().splitlines() or err.strip().splitlines() or [""])[0]
    return f"exit {code}: {said[:70]}"


PAGES = ("/", "/overview.json", "/consumers/picky", "/unrouted")
ALL_PAGES = "HTTP " + " ".join("200" for _ in PAGES)


async def look(system: System) -> str:
    """The console's pages as an operator opens them: `ALL_PAGES` when each answered."""
    return await _console(system, "console-look")


async def _console(system: System, what: str) -> str:
    assert system.console is not None
    base = system.console.url
    auth = aiohttp.BasicAuth(USER, PASSWORD)
    timeout = aiohttp.ClientTimeout(total=60)
    statuses: list[str] = []
    try:
        async with aiohttp.ClientSession(auth=auth, timeout=timeout) as session:
            if what == "console-look":
                for path in PAGES:
                    async with session.get(base + path) as response:
                        statuses.append(str(response.status))
            else:
                page = "/consumers/picky" if what == "console-replay" else "/unrouted"
                post = (
                    "/consumers/picky/replay" if what == "console-replay" else "/unrouted/reroute"
                )
                async with session.get(base + page) as response:
                    statuses.append(str(response.status))
                    found = _CSRF.search(await response.text())
                if found is None:
                    return f"GET {page} {statuses[0]}: no form"
                form = {"csrf": found.group(1), "scope": "all"}
                async with session.post(base + post, data=form, allow_redirects=False) as response:
                    statuses.append(str(response.status))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"{type(exc).__name__} after {' '.join(statuses) or 'nothing'}"
    return "HTTP " + " ".join(statuses)


async def retire(system: System, at: float, journal: Journal) -> None:
    """Retire `retiring` as an operator does: stop it, start `heir`, prune one into the other."""
    async with system.worker_lock:
        done = journal.begin("retire", "retiring", at)
        system.retired = True
        for replica in system.workers.pop("retiring", []):
            replica.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(replica.process.wait(), 60)
        await system.start_worker("heir")
        results = []
        for _ in range(10):  # an operator runs it again after a failure
            result = await _cli(system, "prune", "retiring", "--into", "heir", "--delete")
            results.append(result.split(":")[0])
            if result.startswith("exit 0"):
                break
            await asyncio.sleep(3)
        system.pruned = results[-1] == "exit 0"
        journal.end(done, "prune --into heir --delete: " + ", ".join(results))
