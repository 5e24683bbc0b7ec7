"""Receiver processes for tests: `python -m service` as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

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

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


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


SpawnReceiver = Callable[..., Awaitable[Receiver]]
