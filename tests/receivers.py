"""Receiver processes for tests: `python -m service` as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from service.http.app import WEBHOOK_PATH
from tests.support import auth_headers, fixture_bodies, with_correlation_id
from tests.tools.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_service(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `python -m service` to its end (for start-up failures)."""
    return subprocess.run(
        [sys.executable, "-m", "service"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def base_env(**extra: str) -> dict[str, str]:
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    return {**keep, "PYTHONPATH": str(ROOT), **extra}


class Receiver:
    """A receiver process with its stderr captured to a file."""

    def __init__(
        self, process: asyncio.subprocess.Process, port: int, log: Path, scheme: str = "http"
    ) -> None:
        self.process = process
        self.url = f"{scheme}://127.0.0.1:{port}"
        self.log = log

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the process and return its exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signum)
        return await asyncio.wait_for(self.process.wait(), 60)

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def events(self, name: str) -> list[dict[str, Any]]:
        """The log lines whose event is `name`."""
        return [line for line in self.log_lines() if line.get("event") == name]

    async def status(self) -> dict[str, Any]:
        """The `/readyz` body, with its HTTP status as `http`."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/readyz") as response,
        ):
            payload: dict[str, Any] = await response.json()
            payload["http"] = response.status
            return payload

    async def metric(self, name: str) -> float:
        """The sum of every sample of metric `name` (its labels filled in, if any)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/metrics") as response,
        ):
            text = await response.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name)] in " {":
                total += float(line.rsplit(" ", 1)[1])
        return total


async def readyz(url: str, tls: ssl.SSLContext | None = None) -> int | None:
    """The `/readyz` status, or None when nothing answers."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/readyz", ssl=tls if tls is not None else True) as response,
        ):
            return response.status
    except aiohttp.ClientConnectionError:
        return None


async def deliver(
    receiver: Receiver,
    event: str = "talent_created",
    correlation: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST a fixture delivery (or `raw`) with the API key, fresh CorrelationId unless given."""
    body = raw or with_correlation_id(fixture_bodies()[event], correlation or str(uuid.uuid4()))
    sent = {**auth_headers("api_key", body), **(headers or {})}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{receiver.url}{WEBHOOK_PATH}", data=body, headers=sent) as response,
    ):
        answer: dict[str, Any] = await response.json()
        return response.status, answer


SpawnReceiver = Callable[..., Awaitable[Receiver]]


async def cut_off(proxy: TcpProxy, receiver: Receiver) -> None:
    """Close `receiver`'s broker link through `proxy`, refuse new ones, and wait until it knows."""
    proxy.refuse(True)
    await proxy.cut()
    async with asyncio.timeout(10):
        while (await receiver.status())["broker"] != "disconnected":
            await asyncio.sleep(0.05)
