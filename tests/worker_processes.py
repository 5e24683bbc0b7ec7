"""Worker processes for tests: `python -m consumers run MODULE` as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.receivers import base_env


class WorkerProcess:
    """A worker process with its stderr captured to a file."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.text().splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                lines.append({"event": line, "level": "unparsed"})
        return lines

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("event") == name]

    async def stop(self, signum: int = signal.SIGTERM, within: float = 60) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signum)
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            self.process.kill()  # a failed test leaves no process behind
            await self.process.wait()
            raise AssertionError(f"running {within} s after signal {signum}; killed") from None


async def start_consumers(
    args: list[str],
    log: Path,
    env: dict[str, str],
    ready: str,
    what: str,
    within: float = 20,
    *,
    module: str = "consumers",
) -> WorkerProcess:
    """Start `python -m consumers ARGS...`; wait until its log says `ready` (or fail with it)."""
    with log.open("w") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            env=base_env(**env),
            stderr=stderr,
            stdout=stderr,
        )
    started = WorkerProcess(process, log)
    try:
        async with asyncio.timeout(within):
            # Substring, not JSON: the console format is started the same way.
            while ready not in started.text():
                if process.returncode is not None:
                    text = "\n".join(str(line) for line in started.log_lines())
                    raise AssertionError(f"{what} exited {process.returncode}: {text}")
                await asyncio.sleep(0.05)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    return started


async def start_worker(
    module: str, log: Path, env: dict[str, str], *args: str, within: float = 20
) -> WorkerProcess:
    """Start a worker and wait until it consumes (or fail with its log)."""
    return await start_consumers(
        ["run", module, *args], log, env, "worker started", "worker", within
    )


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`python -m consumers ARGS...` to its end: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumers",
        *args,
        env=base_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


SpawnWorker = Callable[..., Awaitable[WorkerProcess]]
