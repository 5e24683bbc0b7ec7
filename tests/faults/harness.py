"""Processes for the fault suite: receivers, counting workers, and a broker the suite owns."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


class OwnedBroker:
    """A RabbitMQ node of the suite's own, so it may be stopped and started mid-load."""

    def __init__(self) -> None:
        self.port = free_port()
        self.node = f"faults-{os.getpid()}-{self.port}@localhost"
        self.base = Path(tempfile.mkdtemp(prefix="faults-broker-"))
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    async def start(self) -> str | None:
        """Boot the node; return why it cannot be had, or None when it runs."""
        server = shutil.which("rabbitmq-server")
        if server is None or shutil.which("rabbitmqctl") is None:
            return "rabbitmq-server is not installed"
        (self.base / "enabled_plugins").write_text("[].\n")
        if _user_exists("rabbitmq"):
            # rabbitmq-server drops to this user when started as root.
            shutil.chown(self.base, "rabbitmq", "rabbitmq")
            shutil.chown(self.base / "enabled_plugins", "rabbitmq", "rabbitmq")
        env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq"),
        }
        await asyncio.to_thread(
            subprocess.run, [server, "-detached"], env=env, capture_output=True, timeout=60
        )
        try:
            async with asyncio.timeout(60):
                while not _listening(self.port):
                    await asyncio.sleep(0.25)
        except TimeoutError:
            return f"a private RabbitMQ node did not start (logs in {self.base / 'log'})"
        return None

    def stop_app(self) -> None:
        self._ctl("stop_app")

    def start_app(self) -> None:
        self._ctl("start_app")

    def shutdown(self) -> None:
        self._ctl("stop")
        shutil.rmtree(self.base, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
