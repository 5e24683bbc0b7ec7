"""RabbitMQ nodes of a test's own, on free loopback ports: to stop, alarm or cluster.

The shared broker must never see an alarm or a stop, since other users are on it.
A node here has its own name, ports, data and log directories, and is stopped and
deleted at the end. Nodes started as root drop to the `rabbitmq` user, as the
Debian package's broker does, and so share its Erlang cookie with `rabbitmqctl`.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NodeUnavailable(RuntimeError):
    """A node of the test's own could not be started; the message says why."""


class Node:
    """One RabbitMQ node on free ports."""

    def __init__(self, label: str = "node") -> None:
        self.port = free_port()
        self.name = f"{label}-{uuid.uuid4().hex[:8]}@localhost"
        self.base = Path(tempfile.mkdtemp(prefix=f"rabbit-{label}-"))
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`rabbitmqctl -n <this node> ...`."""
        return subprocess.run(
            ["rabbitmqctl", "-n", self.name, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def must(self, *args: str, timeout: float = 60) -> str:
        """`ctl`, raising with its output unless it succeeds."""
        done = self.ctl(*args, timeout=timeout)
        if done.returncode != 0:
            raise NodeUnavailable(f"rabbitmqctl {' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout

    def streams(self, *args: str, timeout: float = 60) -> str:
        """`rabbitmq-streams -n <this node> ...`, raising with its output unless it succeeds."""
        command = [_tool("rabbitmq-streams"), "-n", self.name, *args]
        home = None
        if os.geteuid() == 0 and _user_exists("rabbitmq"):
            # As the package's own wrappers do: the `rabbitmq` user's Erlang cookie is
            # the one the nodes share.
            home = pwd.getpwnam("rabbitmq").pw_dir
            command = ["su", "rabbitmq", "-s", "/bin/sh", "-c", shlex.join(command)]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd=home
        )
        if done.returncode != 0:
            said = done.stderr or done.stdout
            raise NodeUnavailable(f"rabbitmq-streams {' '.join(args)}: {said}")
        return done.stdout

    async def start(self) -> None:
        """Boot the node; raise `NodeUnavailable` saying why it cannot be had."""
        server = shutil.which("rabbitmq-server")
        if server is None or shutil.which("rabbitmqctl") is None:
            raise NodeUnavailable("rabbitmq-server is not installed")
        (self.base / "enabled_plugins").write_text("[].\n")
        if _user_exists("rabbitmq"):
            for path in (self.base, self.base / "enabled_plugins"):
                shutil.chown(path, "rabbitmq", "rabbitmq")
        env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
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
            async with asyncio.timeout(90):
                while not _listening(self.port):
                    await asyncio.sleep(0.25)
        except TimeoutError:
            raise NodeUnavailable(
                f"a RabbitMQ node did not start (logs in {self.base / 'log'})"
            ) from None

    def stop_app(self) -> None:
        self.must("stop_app")

    def start_app(self) -> None:
        self.must("start_app")

    def memory_alarm(self, on: bool) -> None:
        """Raise the memory alarm (a watermark of 0 sets it off at once), or lift it."""
        self.must("set_vm_memory_high_watermark", "0" if on else "0.4")

    def shutdown(self) -> None:
        self.ctl("stop")
        shutil.rmtree(self.base, ignore_errors=True)


class Cluster:
    """Nodes joined into one RabbitMQ cluster."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = [Node(f"cluster{n}") for n in range(1, size + 1)]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated, as AMQP_URL takes them."""
        return ",".join(node.url for node in self.nodes)

    async def start(self) -> None:
        """Boot every node, then join the others to the first."""
        await asyncio.gather(*(node.start() for node in self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            await asyncio.to_thread(node.stop_app)
            await asyncio.to_thread(node.must, "join_cluster", first.name)
            await asyncio.to_thread(node.start_app)

    def by_port(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def shutdown(self) -> None:
        for node in self.nodes:
            node.shutdown()


def _tool(name: str) -> str:
    """A RabbitMQ command-line tool; Debian's package leaves some beside `rabbitmqctl`'s script."""
    found = shutil.which(name)
    if found is not None:
        return found
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise NodeUnavailable("rabbitmqctl is not installed")
    return str(Path(os.path.realpath(ctl)).parent / name)


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
