"""The system a chaos run puts under faults: all of it real, all of it the run's own.

- a three-node RabbitMQ cluster (`tests.tools.nodes`), on free loopback ports;
- two receivers with spools, each reaching every node through a TCP proxy of its own
  (so one receiver's link can be cut or stalled); the second one's spool is on a small
  filesystem that can be filled;
- workers: `plain`, two replicas of `once` (dedupe, PostgreSQL through a proxy that can
  refuse or answer "starting up"), `picky`, `retiring` and later `heir`;
- a console, and two `tail`s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
from yarl import URL

from tests.chaos.handlers import once
from tests.consoles import PASSWORD, Console, start_console
from tests.databases import ADMIN_URL, own_database_async
from tests.receivers import base_env, free_port
from tests.support import API_KEYS
from tests.tools.nodes import Cluster, Node
from tests.tools.small_fs import SmallFilesystem, in_small_filesystem
from tests.tools.tcp_proxy import TcpProxy
from tests.worker_processes import WorkerProcess, start_worker

HANDLERS = "tests.chaos.handlers"
# Consumer module -> replicas; `heir` starts only when `retiring` is retired.
REPLICAS = {"plain": 1, "once": 2, "picky": 1, "retiring": 1, "history": 1}
SPOOL_DISK = 8 << 20


@dataclass
class ReceiverSlot:
    """One receiver: its port and spool stay the same across restarts."""

    index: int
    port: int
    spool: Path
    proxies: list[TcpProxy]
    process: asyncio.subprocess.Process | None = None
    disk: SmallFilesystem | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class System:
    """Starts, breaks, restores and finally stops every part of one run."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ledger_dir = workdir / "ledger"
        self.ledger_dir.mkdir()
        self.cluster = Cluster(3)
        self.down: set[int] = set()
        self.broker_lock = asyncio.Lock()
        self.worker_lock = asyncio.Lock()
        self.postgres_lock = asyncio.Lock()
        self.disk_lock = asyncio.Lock()
        self.receivers: list[ReceiverSlot] = []
        self.workers: dict[str, list[WorkerProcess]] = {}
        self.retired = False
        self.pruned = False
        self.postgres: TcpProxy | None = None
        self.database_url = ""
        self.console: Console | None = None
        self.tails: list[asyncio.subprocess.Process] = []
        self.tail_logs: list[Path] = []
        self._logs = 0

    @property
    def amqp_url(self) -> str:
        return self.cluster.url

    def log(self, name: str) -> Path:
        self._logs += 1
        return self.workdir / f"{self._logs:03d}-{name}.log"

    def worker_env(self) -> dict[str, str]:
        assert self.postgres is not None
        through = URL(self.database_url).with_host("127.0.0.1").with_port(self.postgres.port)
        return {
            "AMQP_URL": self.amqp_url,
            "CHAOS_LEDGER_DIR": str(self.ledger_dir),
            "DEDUPE_DATABASE_URL": str(through),
            "HISTORY_DATABASE_URL": str(through),
            "LOG_FORMAT": "json",
            # Not 9100: `make test` beside a chaos run needs the default ports free.
            "METRICS_PORT": "0",
            **({"CHAOS_BREAK": os.environ["CHAOS_BREAK"]} if "CHAOS_BREAK" in os.environ else {}),
        }

    # --- start -------------------------------------------------------------------------

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Bring everything up; `stack` takes it all down again, in reverse."""
        stack.push_async_callback(asyncio.to_thread, self.cluster.shutdown)
        await self.cluster.start()
        self.database_url = await stack.enter_async_context(own_database_async())
        admin = URL(ADMIN_URL)
        self.postgres = await stack.enter_async_context(
            TcpProxy(admin.host or "127.0.0.1", admin.port or 5432)
        )
        connection = await asyncpg.connect(self.database_url)
        try:
            await connection.execute(
                f"CREATE TABLE {once.TABLE} (message_id text NOT NULL, worker text NOT NULL,"
                " at timestamptz NOT NULL DEFAULT now())"
            )
        finally:
            await connection.close()
        for index in range(2):
            proxies = [
                await stack.enter_async_context(TcpProxy("127.0.0.1", node.port))
                for node in self.cluster.nodes
            ]
            spool = self.workdir / f"spool-{index}"
            self.receivers.append(ReceiverSlot(index, free_port(), spool, proxies))
        stack.push_async_callback(self.stop_processes)
        for name, count in REPLICAS.items():
            for _ in range(count):
                await self.start_worker(name)
        await asyncio.gather(*(self.start_receiver(slot) for slot in self.receivers))
        self.console = await start_console(
            self.log("console"),
            {
                "AMQP_URL": self.amqp_url,
                "CONSOLE_PASSWORD": PASSWORD,
                "CONSOLE_PORT": "0",
                "CONSOLE_RECEIVERS": ",".join(
                    f"http://127.0.0.1:{slot.port}" for slot in self.receivers
                ),
                "LOG_FORMAT": "json",
            },
        )
        for _ in range(2):
            self.tails.append(await self._tail())

    async def start_worker(self, name: str) -> None:
        module = name if name == "history" else f"{HANDLERS}.{name}"
        started = await start_worker(
            module, self.log(f"worker-{name}"), self.worker_env(), within=60
        )
        self.workers.setdefault(name, []).append(started)

    async def start_receiver(self, slot: ReceiverSlot) -> None:
        env = base_env(
            AMQP_URL=",".join(
                f"amqp://guest:guest@127.0.0.1:{proxy.port}/" for proxy in slot.proxies
            ),
            HOST="127.0.0.1",
            PORT=str(slot.port),
            SPOOL_DIR=str(slot.spool),
            LOG_FORMAT="json",
            WEBHOOK_API_KEYS=API_KEYS[0],
        )
        argv = [sys.executable, "-m", "service"]
        if slot.index == 1 and slot.disk is None:
            argv = in_small_filesystem(argv, slot.spool, size=SPOOL_DISK)
        with self.log(f"receiver-{slot.index}").open("w") as log:
            slot.process = await asyncio.create_subprocess_exec(
                *argv, env=env, stdout=log, stderr=log
            )
        if slot.index == 1:
            slot.disk = SmallFilesystem(slot.process.pid, slot.spool)
        await self._healthy(slot)

    async def _healthy(self, slot: ReceiverSlot, within: float = 60) -> None:
        async with aiohttp.ClientSession() as session, asyncio.timeout(within):
            while True:
                assert slot.process is not None
                if slot.process.returncode is not None:
                    raise RuntimeError(f"receiver {slot.index} exited {slot.process.returncode}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{slot.url}/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)

    async def _tail(self) -> asyncio.subprocess.Process:
        log = self.log("tail")
        self.tail_logs.append(log)
        with log.open("w") as out:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "consumers",
                "tail",
                env=base_env(AMQP_URL=self.amqp_url, LOG_FORMAT="json"),
                stdout=out,
                stderr=out,
            )

    # --- restore and stop --------------------------------------------------------------

    async def node_up(self, index: int) -> None:
        node = self.cluster.nodes[index]
        await node.start()
        await asyncio.to_thread(node.must, "await_startup", timeout=120)
        self.down.discard(index)

    def node_kill(self, index: int) -> None:
        node = self.cluster.nodes[index]
        pid = int((node.base / "pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        self.down.add(index)

    def up_nodes(self) -> list[Node]:
        return [node for i, node in enumerate(self.cluster.nodes) if i not in self.down]

    async def spooled(self) -> int:
        """Records still in the receivers' spools (-1 when one does not answer)."""
        total = 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for slot in self.receivers:
                try:
                    async with session.get(f"{slot.url}/readyz") as response:
                        total += int((await response.json())["spool"]["records"])
                except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
                    return -1
        return total

    async def stop_tails(self) -> list[int | None]:
        for tail in self.tails:
            if tail.returncode is None:
                tail.send_signal(signal.SIGINT)
        codes: list[int | None] = []
        for tail in self.tails:
            try:
                codes.append(await asyncio.wait_for(tail.wait(), 30))
            except TimeoutError:
                codes.append(None)
        return codes

    def tailed(self) -> list[set[str]]:
        """The message ids each `tail` printed."""
        return [
            {part[3:] for part in log.read_text().split() if part.startswith("id=")}
            for log in self.tail_logs
        ]

    async def stop_processes(self) -> None:
        children = [w.process for ws in self.workers.values() for w in ws]
        children += [slot.process for slot in self.receivers if slot.process is not None]
        children += self.tails
        if self.console is not None:
            children.append(self.console.process)
        for child in children:
            if child.returncode is None:
                child.kill()
        for child in children:
            await child.wait()


@contextlib.asynccontextmanager
async def running_system(workdir: Path) -> AsyncIterator[System]:
    """A started system writing its logs to `workdir`; everything is stopped after."""
    async with contextlib.AsyncExitStack() as stack:
        system = System(workdir)
        await system.start(stack)
        yield system
