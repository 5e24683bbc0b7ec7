"""Background tasks that cannot die silently (a crash is logged, counted, and the task
restarts), and stops that a task deaf to its cancellation cannot hold for ever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from service.shared.timing import backoff

log = structlog.get_logger("service.supervise")

RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
# A run that lasted this long counts as healthy: the next crash starts the back-off over.
HEALTHY_SECONDS = 60.0


def keep_running(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    on_crash: Callable[[str], object] = lambda name: None,
) -> asyncio.Task[None]:
    """Run `run()` in a task until it returns or the task is cancelled.

    An exception from it is logged with its traceback, reported to `on_crash`, and
    `run()` is called again after a back-off.
    """

    async def supervised() -> None:
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await run()
                return
            except (asyncio.CancelledError, Exception):
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # being stopped: whatever the stop raised ends the task
                # aiormq closes its futures with CancelledError: a crash, not a stop.
                failures = _crashed(name, started, failures, on_crash)
            await asyncio.sleep(backoff(RESTART_DELAYS, failures))
            failures += 1

    return asyncio.create_task(supervised(), name=name)


def _crashed(name: str, started: float, failures: int, on_crash: Callable[[str], object]) -> int:
    """Log and report a crash; return the failure count the back-off goes on from."""
    try:
        log.exception("background task failed; starting it again", task=name)
        on_crash(name)
    except Exception:  # noqa: S110 - a failing log line must not end the supervision
        pass
    return 0 if time.monotonic() - started > HEALTHY_SECONDS else failures


async def stop(task: asyncio.Task[None] | None) -> None:
    """Cancel `task` and wait for it; whatever it raises on the way out is logged, not raised."""
    if task is None:
        return
    task.cancel()
    # `wait` neither raises the task's error nor swallows a cancellation of the caller.
    await asyncio.wait([task])
    _report(task)


def _report(task: asyncio.Task[None]) -> None:
    """Log what an ended task raised on its way out, if anything."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error(
            "background task failed while stopping",
            task=task.get_name(),
            exc_info=(type(error), error, error.__traceback__),
        )


async def stop_insisting(
    task: asyncio.Task[None] | None, *, every: float = 1.0, tries: int = 5
) -> bool:
    """Cancel `task` until it ends, `tries` times at most, `every` s apart; True if it ended.

    For tasks whose clean-up may be cut short: a library can swallow a cancellation that
    lands as a reply arrives (`wait_for` on Python 3.11 does), and one cancel is then lost.
    """
    if task is None:
        return True
    for attempt in range(tries):
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=every)
        if done:
            _report(task)
            return True
        log.warning(
            "background task still running after a cancel; cancelling it again",
            task=task.get_name(),
            attempt=attempt + 1,
            waiting_at=waiting_at(task),
        )
    return False


async def ended_within(step: Awaitable[Any], seconds: float) -> bool:
    """Await `step` for `seconds` at most; True if it ended (its error is raised).

    Unlike `wait_for`, a step that ignores its cancellation cannot hold the caller: past
    the time it is cancelled and left behind.
    """
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait([task], timeout=seconds)
    if not done:
        task.cancel()
        return False
    task.result()
    return True


def waiting_at(task: asyncio.Task[Any]) -> str:
    """Where `task` is suspended, as `file:line function` from the outermost frame in.

    `Task.get_stack` gives one frame for a suspended task, so this follows what each
    coroutine awaits, as far as it can be followed (not into an async generator).
    """
    shown = []
    step: Any = task.get_coro()
    while step is not None:
        frame = getattr(step, "cr_frame", None) or getattr(step, "gi_frame", None)
        if frame is None:
            break
        where = frame.f_code.co_filename.rsplit("/", 1)[-1]
        shown.append(f"{where}:{frame.f_lineno} {frame.f_code.co_name}")
        step = getattr(step, "cr_await", None) or getattr(step, "gi_yieldfrom", None)
    return " > ".join(shown)


def waiting_tasks() -> dict[str, str]:
    """Every other task of the running loop, by name, with where it is suspended."""
    current = asyncio.current_task()
    return {
        task.get_name(): waiting_at(task) for task in asyncio.all_tasks() if task is not current
    }
