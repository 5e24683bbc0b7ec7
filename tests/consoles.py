"""Console processes and a real browser for the console's tests.

`python -m consumers console` runs as an operator runs it; Playwright drives Debian's
Chromium (`deploy/local/ensure-chromium` finds or installs it). A test fails, never
skips, when the browser cannot be had.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.receivers import ROOT
from tests.support import AMQP_URL
from tests.worker_processes import WorkerProcess, start_consumers

PASSWORD = "console-pw-31337"
USER = "operator"


class Console(WorkerProcess):
    """A console process with its log in a file, and the URL it serves."""

    def __init__(self, started: WorkerProcess) -> None:
        super().__init__(started.process, started.log)
        [listening] = self.events("console listening")
        self.url = str(listening["url"]).rstrip("/")

    async def stop(self, signum: int = signal.SIGTERM, within: float = 20) -> int:
        return await super().stop(signum, within)


async def start_console(log: Path, env: dict[str, str]) -> Console:
    """Start a console and wait for its `console listening` line; fail with its log."""
    return Console(await start_consumers(["console"], log, env, "console listening", "console"))


def console_env(prefix: str, **extra: str) -> dict[str, str]:
    return {
        "AMQP_URL": AMQP_URL,
        "BUS_PREFIX": prefix,
        "CONSOLE_PASSWORD": PASSWORD,
        "CONSOLE_PORT": "0",
        "LOG_FORMAT": "json",
        **extra,
    }


def chromium() -> str:
    """The Chromium binary; fail with the reason when there is none."""
    script = ROOT / "deploy" / "local" / "ensure-chromium"
    done = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    path = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not path or not shutil.which(path):
        pytest.fail(f"no Chromium for the browser tests: {done.stderr.strip()}")
    return path


@asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=os.environ.get("CHROMIUM") or chromium(), headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@asynccontextmanager
async def operator_page(
    launched: Browser, console: Console, password: str = PASSWORD
) -> AsyncIterator[tuple[Page, list[str]]]:
    """A page logged in as the operator, and every URL it requested."""
    context = await launched.new_context(
        http_credentials={"username": USER, "password": password},
        viewport={"width": 1280, "height": 800},
    )
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    page = await context.new_page()
    try:
        yield page, requested
    finally:
        await context.close()
