"""Fixtures: an isolated bus prefix per test, a view of the bus, and in-process receivers."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import ssl
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from consumers.consumer import Consumer
from consumers.runtime.worker import Worker
from consumers.settings import WorkerSettings
from service.http.app import create_app
from service.http.front import open_front_door
from service.observability.logs import configure_logging
from service.shared.environment import Secret
from tests.databases import own_database
from tests.receivers import Receiver, SpawnReceiver, base_env, free_port, readyz
from tests.support import (
    AMQP_URL,
    API_KEYS,
    SCANNED_SECRETS,
    SHARED_SECRETS,
    BusView,
    consumer_queue_names,
    open_bus,
    receiver_settings,
)
from tests.tools.tcp_proxy import TcpProxy, proxy_to
from tests.worker_processes import SpawnWorker, WorkerProcess, start_worker

ReceiverFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


# One log per process of the suite: with `pytest -n`, each worker writes its own.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
SUITE_LOG = (
    Path(__file__).resolve().parent.parent
    / ".test-logs"
    / (f"suite-{_WORKER}.log" if _WORKER else "suite.log")
)


class _Tee(io.BufferedIOBase):
    """Log output to stderr and to the suite's log file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(exist_ok=True)
        self._file = path.open("wb")

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        sys.stderr.buffer.write(data)
        self._file.write(data)
        return len(data)

    def flush(self) -> None:
        self._file.flush()


def pytest_configure(config: pytest.Config) -> None:
    # No masking here: the secret scan below must see what the code itself would log.
    configure_logging("debug", "json", stream=cast(BinaryIO, _Tee(SUITE_LOG)))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Stop at once, with the port named, when a test of the defaults cannot have its ports.

    With `pytest -n 2 --dist loadgroup` (`make test`) a module's tests run in one worker,
    so its module fixtures (a database, a node of its own) are made once; the tests of
    the defaults all run in one worker, one at a time. Every worker checks the ports as
    it collects, and no test starts before every worker has collected.
    """
    for item in items:
        default = item.get_closest_marker("default_ports") is not None
        module = item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group("default-ports" if default else module))
    wanted = sorted(
        {
            port
            for item in items
            for mark in item.iter_markers("default_ports")
            for port in mark.args
        }
    )
    for port in wanted:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                _stop_before_any_test(
                    session,
                    f"port {port} is taken on this machine. The suite runs `make run` and the"
                    f" console on their default ports (8080, 8090, 9100): stop what holds {port}"
                    " (a `make run` still up? Ctrl-C it) and run `make test` again.",
                )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Stop when the tests of the defaults would not run in one process, one at a time.

    In several processes they must be grouped (`--dist loadgroup`, as `make test` runs).
    pytest-xdist groups a test by renaming it `<id>@<group>`; a pytest that ignores the
    rename (9.2.0 does) leaves every test ungrouped, with no word said.
    """
    config = session.config
    if session.shouldstop or not hasattr(config, "workerinput"):
        return  # stopped already (pytest calls this hook after a failed collection too)
    if not getattr(config.option, "loadgroup", False):
        if any(item.get_closest_marker("default_ports") for item in session.items):
            _stop_before_any_test(
                session,
                "tests that need the same port would run at once in several processes:"
                " add `--dist loadgroup` (as `make test` does), or select other tests.",
            )
        return
    ungrouped = [item.nodeid for item in session.items if "@" not in item.nodeid]
    if ungrouped:
        _stop_before_any_test(
            session,
            f"pytest-xdist could not group the tests ({ungrouped[0]} has no group), so tests"
            " that need the same port would run at once. Install the versions in"
            " constraints.txt (`make venv`) and run `make test` again.",
        )


def _stop_before_any_test(session: pytest.Session, reason: str) -> NoReturn:
    """End the run with `reason` shown, from one process or from a pytest-xdist worker.

    A worker's own exit message is not shown; its `shouldstop` is, as the run's reason.
    """
    session.shouldstop = reason
    pytest.exit(reason, returncode=4)


@pytest.fixture(scope="session", autouse=True)
def secret_scan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the run, search every log it wrote, in-process and from child processes."""
    yield
    logs = [SUITE_LOG, *tmp_path_factory.getbasetemp().rglob("*.log")]
    leaks = [
        f"{path}: {secret[:4]}..."
        for path in logs
        if path.is_file()
        for secret in SCANNED_SECRETS
        if secret in path.read_text(errors="replace")
    ]
    assert not leaks, f"secrets found in logs: {leaks}"


@pytest.fixture(scope="session")
def broker_reachable() -> None:
    """Fail, never skip, when the broker the bus tests need is not there."""
    url = URL(AMQP_URL)
    try:
        socket.create_connection((url.host or "127.0.0.1", url.port or 5672), timeout=3).close()
    except OSError as exc:
        pytest.fail(
            f"RabbitMQ is not reachable at {url.host}:{url.port} ({exc}); `make test` starts it"
        )


@pytest.fixture(scope="session")
def dedupe_database() -> Iterator[str]:
    """The URL of a PostgreSQL database of this run's own; fails, never skips, without one."""
    with own_database() as url:
        yield url


@pytest.fixture
async def proxy(broker_reachable: None) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of the test broker; `proxy.url_for(AMQP_URL)` goes through it."""
    async with proxy_to(AMQP_URL) as (running, _):
        yield running


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def bus(broker_reachable: None, prefix: str) -> AsyncIterator[BusView]:
    connection, view = await open_bus(prefix)
    try:
        yield view
    finally:
        await view.remove_all()
        await connection.close()


@pytest.fixture
def receiver_client(aiohttp_client: Any) -> ClientFactory:
    """A test client for a receiver's app, served as `serve` serves it: front door open."""

    async def make(app: web.Application) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(app)
        runner = client.server.runner
        assert runner is not None
        assert runner.server is not None
        assert open_front_door(app, runner.server)
        return client

    return make


@pytest.fixture
def start_receiver(receiver_client: ClientFactory, bus: BusView) -> ReceiverFactory:
    """Start an in-process receiver on the test's prefix and wait until it is ready."""

    async def start(**overrides: Any) -> TestClient[Any, Any]:
        settings = receiver_settings(bus.names.prefix, **overrides)
        client = await receiver_client(create_app(settings))
        async with asyncio.timeout(10):
            while (await client.get("/readyz")).status != 200:
                await asyncio.sleep(0.05)
        return client

    return start


class RunningWorker:
    """A worker running in the test's event loop until `stop()` or the end of the test."""

    def __init__(self, worker: Worker, stop: asyncio.Event, task: asyncio.Task[None]) -> None:
        self.worker = worker
        self._stop = stop
        self._task = task

    async def stop(self) -> None:
        self._stop.set()
        await self._task


WorkerFactory = Callable[..., Awaitable[RunningWorker]]


@pytest.fixture
async def run_worker(bus: BusView) -> AsyncIterator[WorkerFactory]:
    """Start in-process workers on the test's prefix; stop them and delete their queues after."""
    running: list[RunningWorker] = []

    async def start(
        *consumers: Consumer,
        amqp_url: str = AMQP_URL,
        concurrency: int | None = None,
        metrics_port: int = 0,
        dedupe_url: str | None = None,
    ) -> RunningWorker:
        for consumer in consumers:
            bus.forget_later(*consumer_queue_names(bus.names.prefix, consumer))
        settings = WorkerSettings(
            amqp_url=Secret(amqp_url),
            bus_prefix=bus.names.prefix,
            shutdown_timeout=5.0,
            metrics_port=metrics_port,
            dedupe_database_url=Secret(dedupe_url) if dedupe_url else None,
        )
        worker = Worker(consumers, settings, concurrency=concurrency)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        ready = asyncio.create_task(worker.ready.wait())
        await asyncio.wait([task, ready], timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if not worker.ready.is_set():
            ready.cancel()
            stop.set()
            await task  # re-raises what stopped the worker
            pytest.fail("worker did not start within 15 s")
        handle = RunningWorker(worker, stop, task)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        await handle.stop()


@pytest.fixture
async def spawn_receiver(bus: BusView, tmp_path: Path) -> AsyncIterator[SpawnReceiver]:
    """Start `python -m service` on the test's prefix; kill what is left at the end."""
    processes: list[asyncio.subprocess.Process] = []

    async def spawn(
        tls: ssl.SSLContext | None = None,
        wrap: Callable[[list[str]], list[str]] = lambda argv: argv,
        **overrides: str,
    ) -> Receiver:
        """`wrap` may put the command inside another (a resource limit, a small filesystem)."""
        port = free_port()
        log = tmp_path / f"receiver-{port}.log"
        settings = {
            "AMQP_URL": AMQP_URL,
            "BUS_PREFIX": bus.names.prefix,
            "WEBHOOK_API_KEYS": ",".join(API_KEYS),
            "WEBHOOK_SHARED_SECRETS": ",".join(SHARED_SECRETS),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "LOG_FORMAT": "json",
            "PUBLISH_TIMEOUT": "3",
        }
        env = base_env(**{**settings, **overrides})
        with log.open("w") as stderr:
            process = await asyncio.create_subprocess_exec(
                *wrap([sys.executable, "-m", "service"]), env=env, stderr=stderr
            )
        processes.append(process)
        running = Receiver(process, port, log, "https" if tls else "http")
        async with asyncio.timeout(15):
            while await readyz(running.url, tls) != 200:
                if process.returncode is not None:
                    pytest.fail(f"the receiver exited with {process.returncode}: {log.read_text()}")
                await asyncio.sleep(0.05)
        return running

    yield spawn
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
async def spawn_worker(bus: BusView, tmp_path: Path) -> AsyncIterator[SpawnWorker]:
    """Start `python -m consumers run MODULE` on the test's prefix; kill what is left after.

    `consumers` are those the module runs, so their queues are deleted at the end.
    """
    workers: list[WorkerProcess] = []

    async def spawn(
        module: str, *consumers: Consumer, args: tuple[str, ...] = (), **env: str
    ) -> WorkerProcess:
        for consumer in consumers:
            bus.forget_later(*consumer_queue_names(bus.names.prefix, consumer))
        log = tmp_path / f"worker-{len(workers)}.log"
        settings = {"AMQP_URL": AMQP_URL, "BUS_PREFIX": bus.names.prefix, **env}
        worker = await start_worker(module, log, settings, *args)
        workers.append(worker)
        return worker

    yield spawn
    for worker in workers:
        if worker.process.returncode is None:
            worker.process.kill()
            await worker.process.wait()
