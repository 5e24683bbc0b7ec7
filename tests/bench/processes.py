"""The benchmark's child processes, and what /proc tells of them and of the broker.

CPU time, peak memory, and whether a local RabbitMQ has gone idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.receivers import ROOT


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = subprocess.run(args, capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    line = [line for line in result.stdout.splitlines() if line.startswith("{")][-1]
    return dict(json.loads(line))


CHILDREN: list[asyncio.subprocess.Process] = []


async def start(args: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("w") as stderr:
        child = await asyncio.create_subprocess_exec(
            sys.executable, *args, env=env, stderr=stderr, stdout=stderr, cwd=ROOT
        )
    CHILDREN.append(child)
    return child


async def wait_for(condition: Any, within: float = 60) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds(pid: int) -> float:
    """CPU time the running children of a process have used so far (its exporter process)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):  # it ended in between
                total += cpu_seconds(int(child))
    return total


async def children_quiet(pid: int, within: float = 30.0) -> None:
    """Wait until the children of `pid` (its span exporter) are idle, up to `within` seconds.

    An exporter process behind a load goes on encoding and sending after it; on two
    shared cores that work would be charged to whatever is measured next.
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        before = children_cpu_seconds(pid)
        await asyncio.sleep(1.0)
        if children_cpu_seconds(pid) - before < 0.05:
            return


def broker_pids() -> list[int]:
    """The local RabbitMQ's Erlang VM processes, if the broker runs on this machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "beam.smp":
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


async def settle(within: float = 30.0) -> None:
    """Wait until a local broker is idle, up to `within` seconds.

    A quorum queue keeps writing and compacting after a load ends; on two shared cores
    that work would be charged to whatever is measured next.
    """
    deadline = time.monotonic() + within
    while (pids := broker_pids()) and time.monotonic() < deadline:
        try:
            before = sum(cpu_seconds(pid) for pid in pids)
            await asyncio.sleep(1.0)
            if sum(cpu_seconds(pid) for pid in pids) - before < 0.1:
                return
        except FileNotFoundError:
            continue  # a short-lived Erlang VM (rabbitmqctl) ended meanwhile
