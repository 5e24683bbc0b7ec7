"""Processes for the fault suite: receivers and counting workers (nodes: `tests.tools.nodes`)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
API_KEY_ENV = "WEBHOOK_API_KEYS"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(**values: str) -> dict[str, str]:
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    return {**keep, "PYTHONPATH": str(ROOT), "LOG_FORMAT": "json", **values}


async def _answering(url: str, within: float = 20.0) -> None:
    """Wait until `url` answers 200."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(within):
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


@dataclass
class Process:
    """A child process with its stderr in a file."""

    process: asyncio.subprocess.Process
    log: Path

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signum)
        return await self.process.wait()


class Harness:
    """Starts and finally stops every process of one scenario."""

    def __init__(self, workdir: Path, amqp_url: str, prefix: str, api_key: str) -> None:
        self.workdir = workdir
        self.amqp_url = amqp_url
        self.prefix = prefix
        self.api_key = api_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.count_file = workdir / "counted.txt"
        self.spool_dir = workdir / "spool"
        self._children: list[Process] = []

    async def _spawn(
        self,
        args: list[str],
        env: dict[str, str],
        name: str,
        wrap: Callable[[list[str]], list[str]] = lambda argv: argv,
    ) -> Process:
        log = self.workdir / f"{name}-{len(self._children)}.log"
        with log.open("w") as stderr:
            child = await asyncio.create_subprocess_exec(
                *wrap([sys.executable, *args]), env=env, stderr=stderr, stdout=stderr
            )
        process = Process(child, log)
        self._children.append(process)
        return process

    async def receiver(
        self,
        *,
        amqp_url: str | None = None,
        spool: bool = True,
        wait_ready: bool = True,
        wrap: Callable[[list[str]], list[str]] = lambda argv: argv,
    ) -> Process:
        """Start `python -m service`; wait until it is ready (or only alive, with `wait_ready`).

        `wrap` may put the command inside another, such as a small filesystem.
        """
        env = _env(
            AMQP_URL=amqp_url or self.amqp_url,
            BUS_PREFIX=self.prefix,
            HOST="127.0.0.1",
            PORT=str(self.port),
            PUBLISH_TIMEOUT="1",
            **{API_KEY_ENV: self.api_key},
        )
        if spool:
            env["SPOOL_DIR"] = str(self.spool_dir)
        process = await self._spawn(["-m", "service"], env, "receiver", wrap)
        await _answering(f"{self.url}/readyz" if wait_ready else f"{self.url}/healthz")
        return process

    async def worker(self, *, amqp_url: str | None = None) -> Process:
        """Start a counting worker and wait until it consumes."""
        env = _env(
            AMQP_URL=amqp_url or self.amqp_url,
            BUS_PREFIX=self.prefix,
            COUNT_FILE=str(self.count_file),
            METRICS_PORT="0",
        )
        process = await self._spawn(
            ["-m", "consumers", "run", "tests.workers.counter"], env, "worker"
        )
        async with asyncio.timeout(20):
            while '"event":"worker started"' not in process.log.read_text():
                await asyncio.sleep(0.05)
        return process

    def counted(self) -> Counter[str]:
        if not self.count_file.exists():
            return Counter()
        return Counter(line for line in self.count_file.read_text().splitlines() if line)

    async def close(self) -> None:
        for child in self._children:
            if child.process.returncode is None:
                child.process.kill()
                await child.process.wait()
