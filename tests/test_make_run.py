"""`make run` as the Quickstart has it: receiver, consumers, history and console, on defaults.

Only the bus prefix and the example's output directories are the test's own; the ports
(8080 for the receiver, 8090 for the console, 9100 for worker metrics) are the defaults a
user meets, so the test fails, saying which, when another program holds one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from consumers import audit_log, history, placement_sync
from service.http.app import WEBHOOK_PATH
from tests.receivers import ROOT, base_env
from tests.support import BusView, consumer_queue_names, fixture_bodies
from tests.worker_processes import run_cli

pytestmark = [pytest.mark.rabbit, pytest.mark.timeout(180)]

DEV_DATABASE = "postgresql://postgres@127.0.0.1:5432/avionte_relay"


async def answers(url: str, **kwargs: object) -> int | None:
    try:
        async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as response:  # type: ignore[arg-type]
            return response.status
    except aiohttp.ClientConnectionError:
        return None


def _examples_env(bus: BusView, tmp_path: Path) -> dict[str, str]:
    """The test's own prefix and output directories; its queues removed after it."""
    for consumer in (audit_log.consumer, placement_sync.consumer, history.consumer):
        bus.forget_later(*consumer_queue_names(bus.names.prefix, consumer))
    return base_env(
        BUS_PREFIX=bus.names.prefix,
        AUDIT_LOG_DIR=str(tmp_path / "audit-log"),
        SPOOL_DIR=str(tmp_path / "spool"),
    )


async def _make_run(env: dict[str, str], out: Path) -> asyncio.subprocess.Process:
    with out.open("w") as log:
        return await asyncio.create_subprocess_exec(
            "make", "run", cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True
        )


async def _interrupt(make: asyncio.subprocess.Process) -> None:
    """Ctrl-C, as the README says; killed if it has not stopped within a minute."""
    if make.returncode is None:
        os.killpg(make.pid, signal.SIGINT)
    try:
        await asyncio.wait_for(make.wait(), 60)
    except TimeoutError:
        os.killpg(make.pid, signal.SIGKILL)
        await make.wait()


@pytest.mark.default_ports(8080, 8090, 9100)
async def test_make_run_serves_a_delivery_to_the_examples_and_opens_the_console(
    bus: BusView, tmp_path: Path
) -> None:
    env = _examples_env(bus, tmp_path)
    audit = tmp_path / "audit-log"
    out = tmp_path / "make-run.log"
    make = await _make_run(env, out)
    try:
        async with asyncio.timeout(90):
            while await answers("http://127.0.0.1:8080/readyz") != 200:
                assert make.returncode is None, out.read_text()
                await asyncio.sleep(0.2)
            while await answers("http://127.0.0.1:8090/") is None:
                assert make.returncode is None, out.read_text()
                await asyncio.sleep(0.2)
            # Until the workers have bound their queues, an event of a new prefix is unrouted.
            while out.read_text().count('"event":"worker started"') < 2:
                assert make.returncode is None, out.read_text()
                await asyncio.sleep(0.2)
        printed = out.read_text()
        assert "X-api-key: dev-api-key" in printed
        assert (
            "Console:     http://127.0.0.1:8090/  user operator, password dev-console-password"
            in printed
        )

        body = fixture_bodies()["placement_updated"]
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                "http://127.0.0.1:8080" + WEBHOOK_PATH,
                data=body,
                headers={"X-api-key": "dev-api-key", "Content-Type": "application/json"},
            ) as response,
        ):
            assert response.status == 200
            message_id = (await response.json())["id"]
        async with asyncio.timeout(30):
            while not any(message_id in p.read_text() for p in audit.glob("*.jsonl")):
                await asyncio.sleep(0.2)
        assert "History:     every event kept in PostgreSQL" in printed
        env["HISTORY_DATABASE_URL"] = DEV_DATABASE
        async with asyncio.timeout(30):
            while (
                message_id not in (await run_cli(env, "history", "search", "--id", message_id))[1]
            ):
                await asyncio.sleep(0.2)

        assert await answers("http://127.0.0.1:8090/") == 401
        auth = {"Authorization": aiohttp.encode_basic_auth("operator", "dev-console-password")}
        assert await answers("http://127.0.0.1:8090/", headers=auth) == 200
        # The console watches the local receiver, and counts what the example handled.
        overview: dict[str, Any] = {}
        async with asyncio.timeout(30), aiohttp.ClientSession(headers=auth) as session:
            while (overview.get("activity", {}).get("audit-log") or {}).get("handled") != 1:
                await asyncio.sleep(0.5)
                async with session.get("http://127.0.0.1:8090/overview.json") as response:
                    overview = await response.json()
        assert overview["troubled"] == []
    finally:
        await _interrupt(make)
        await _forget_dedupe_rows(bus.names.prefix)
    assert await answers("http://127.0.0.1:8080/readyz") is None, "the receiver stopped"
    assert await answers("http://127.0.0.1:8090/") is None, "the console stopped"


async def _forget_dedupe_rows(prefix: str) -> None:
    """`make run` gave placement_sync the local dev database: remove this run's records."""
    try:
        connection = await asyncpg.connect(DEV_DATABASE, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return  # make run ran without dedupe: nothing was written
    try:
        exists = await connection.fetchval("SELECT to_regclass('relay_dedupe') IS NOT NULL")
        if exists:
            await connection.execute("DELETE FROM relay_dedupe WHERE scope = $1", prefix)
        if await connection.fetchval("SELECT to_regclass('relay_history') IS NOT NULL"):
            await connection.execute("DELETE FROM relay_history WHERE scope = $1", prefix)
    finally:
        await connection.close()


def _console_default_test(*options: str) -> tuple[int, str]:
    """A pytest run selecting the console's test of its default port: exit code and output."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", *options, "-q", "-p", "no:cacheprovider"),
            *("tests/consumers/console/test_console.py", "-k", "by_default"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


# It holds 8090 itself: in the group of tests that need the port, never beside one.
@pytest.mark.default_ports(8090)
@pytest.mark.parametrize(
    "processes", [[], ["-n", "2", "--dist", "loadgroup"]], ids=["one-process", "as-make-test"]
)
def test_a_taken_default_port_stops_the_run_at_once_naming_it(processes: list[str]) -> None:
    # Held by "someone else" (the port the console's default test needs): a run that
    # selects that test stops before any test, with the port and what to do, whether it
    # runs in one process or in `make test`'s two.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 8090))
        holder.listen()
        code, printed = _console_default_test(*processes)
    assert code in (2, 4), printed  # 2: pytest-xdist's "interrupted"
    assert "port 8090 is taken on this machine" in printed
    assert "INTERNALERROR" not in printed
    assert "no tests ran" in printed


# In the group of the tests of 8090: beside one, the run it starts would find 8090 taken.
@pytest.mark.default_ports(8090)
def test_several_processes_without_groups_stop_before_the_tests_of_the_defaults() -> None:
    code, printed = _console_default_test("-n", "2")
    assert code == 2, printed
    assert "add `--dist loadgroup` (as `make test` does)" in printed
    assert "no tests ran" in printed


@pytest.mark.default_ports(8080, 8090, 9100, 8081, 8091, 9101)
async def test_two_make_runs_side_by_side_as_the_readme_has_them(
    bus: BusView, tmp_path: Path
) -> None:
    first = _examples_env(bus, tmp_path)
    audit = tmp_path / "audit-log"
    # The README's line for a second copy: other ports, and a spool of its own.
    second = {
        **first,
        "PORT": "8081",
        "CONSOLE_PORT": "8091",
        "METRICS_PORT": "9101",
        "SPOOL_DIR": str(tmp_path / "spool-2"),
    }
    runs: list[tuple[asyncio.subprocess.Process, Path]] = []
    try:
        for number, (env, port) in enumerate(((first, 8080), (second, 8081))):
            out = tmp_path / f"make-run-{number}.log"
            make = await _make_run(env, out)
            runs.append((make, out))
            async with asyncio.timeout(90):
                while await answers(f"http://127.0.0.1:{port}/readyz") != 200:
                    assert make.returncode is None, out.read_text()
                    await asyncio.sleep(0.2)
                # Both workers of each run: the example consumers' and the history's.
                while out.read_text().count('"event":"worker started"') < 2:
                    assert make.returncode is None, out.read_text()
                    await asyncio.sleep(0.2)
        assert '"metrics":"http://0.0.0.0:9101/metrics"' in runs[1][1].read_text()
        sent = []
        async with aiohttp.ClientSession() as session:
            for port in (8080, 8081):
                async with session.post(
                    f"http://127.0.0.1:{port}" + WEBHOOK_PATH,
                    data=fixture_bodies()["placement_updated"],
                    headers={"X-api-key": "dev-api-key", "Content-Type": "application/json"},
                ) as response:
                    assert response.status == 200
                    sent.append((await response.json())["id"])
        # One queue per consumer for both copies: each event is written once, by either.
        async with asyncio.timeout(30):
            while not all(
                any(sent_id in p.read_text() for p in audit.glob("*.jsonl")) for sent_id in sent
            ):
                await asyncio.sleep(0.2)
    finally:
        for make, _ in runs:
            await _interrupt(make)
        await _forget_dedupe_rows(bus.names.prefix)
    for port in (8080, 8081, 8090, 8091):
        assert await answers(f"http://127.0.0.1:{port}/") is None, f"{port} still answers"
    for _, out in runs:
        assert '"level":"error"' not in out.read_text()
