"""Supervised background tasks: a crash is logged and counted, and the task runs again."""

from __future__ import annotations

import asyncio

from service.shared.supervise import keep_running, stop


async def test_a_crash_restarts_the_task_and_is_reported() -> None:
    calls: list[int] = []
    crashes: list[str] = []

    async def run() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("boom")
        if len(calls) == 2:
            # aiormq ends its futures this way when a connection closes: not a stop.
            raise asyncio.CancelledError
        await asyncio.Event().wait()

    task = keep_running("example", run, on_crash=crashes.append)
    async with asyncio.timeout(10):
        while len(calls) < 3:
            await asyncio.sleep(0.05)
    assert crashes == ["example", "example"]
    assert not task.done()
    await stop(task)
    assert task.cancelled()


async def test_stopping_waits_and_never_raises() -> None:
    async def run() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("while stopping")

    task = keep_running("example", run)
    await asyncio.sleep(0)
    await stop(task)  # logged, not raised
    assert task.done()
