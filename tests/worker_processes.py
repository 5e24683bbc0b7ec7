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
        return await asyncio.wait_for(self.process.wait(), within)


async def start_worker(
    module: str, log: Path, env: dict[str, str], *args: str, within: float = 20
) -> WorkerProcess:
    """Start a worker and wait until it consumes (or fail with its log)."""
    with log.open("w") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "consumers",
            "run",
            module,
            *args,
            env=base_env(**env),
            stderr=stderr,
            stdout=stderr,
        )
    worker = WorkerProcess(process, log)
    try:
        async with asyncio.timeout(within):
            # Substring, not JSON: the console format is started the same way.
            while "worker started" not in worker.text():
                if process.returncode is not None:
                    text = "\n".join(str(line) for line in worker.log_lines())
                    raise AssertionError(f"worker exited {process.returncode}: {text}")
                await asyncio.sleep(0.05)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    return worker


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
