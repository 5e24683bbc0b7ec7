"""Console processes and a real browser for the console's tests.

`python -m consumers console` runs as an operator runs it; Playwright drives Debian's
Chromium (`deploy/local/ensure-chromium` finds or installs it). A test fails, never
skips, when the browser cannot be had.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.receivers import ROOT, base_env
from tests.support import AMQP_URL

PASSWORD = "console-pw-31337"
USER = "operator"


class Console:
    """A console process with its log in a file."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.url = ""

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                found.append({"event": line})
        return found

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.terminate()
        return await asyncio.wait_for(self.process.wait(), 20)


async def start_console(log: Path, env: dict[str, str]) -> Console:
    """Start a console and wait for its `console listening` line; fail with its log."""
    with log.open("w") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "consumers",
            "console",
            env=base_env(**env),
            stdout=out,
            stderr=out,
        )
    console = Console(process, log)
    try:
        async with asyncio.timeout(20):
            while True:
                listening = [
                    line for line in console.lines() if line.get("event") == "console listening"
                ]
                if listening:
                    console.url = str(listening[0]["url"]).rstrip("/")
                    return console
                if process.returncode is not None:
                    raise AssertionError(f"console exited {process.returncode}: {console.lines()}")
                await asyncio.sleep(0.05)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise


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
