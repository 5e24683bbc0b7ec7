"""Supervised background tasks: a crash is logged and counted, and the task runs again."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from service.shared.supervise import (
    ended_within,
    keep_running,
    stop,
    stop_insisting,
    waiting_at,
    waiting_tasks,
)


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


async def test_a_task_that_swallowed_its_cancel_is_cancelled_again() -> None:
    swallowed: list[int] = []

    async def run() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.append(1)  # as a library racing a reply can
        await asyncio.Event().wait()

    task = keep_running("stubborn", run)
    await asyncio.sleep(0)
    assert await stop_insisting(task, every=0.05)
    assert swallowed == [1]
    assert task.cancelled()
    assert await stop_insisting(None)  # nothing started: nothing to stop


async def test_a_task_that_never_ends_is_given_up_on_and_says_where_it_waits() -> None:
    released = asyncio.Event()

    async def deaf() -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await released.wait()

    task = asyncio.create_task(deaf(), name="deaf")
    try:
        await asyncio.sleep(0)
        assert waiting_at(task).startswith("test_supervise.py:")
        assert waiting_tasks()["deaf"].endswith(" wait")  # innermost: the event's wait
        assert not await stop_insisting(task, every=0.02, tries=3)
        assert not task.done()
        assert not await ended_within(task, 0.05)  # a step deaf to its cancel cannot hold us
        assert not task.done()
    finally:
        released.set()  # or the loop, closing, would wait on it for ever
        await task


async def test_ended_within_gives_what_the_step_gives() -> None:
    assert await ended_within(asyncio.sleep(0.01), 1)
    with pytest.raises(RuntimeError, match="step failed"):
        await ended_within(_failing(), 1)


async def _failing() -> None:
    raise RuntimeError("step failed")
