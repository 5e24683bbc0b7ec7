"""Background tasks that cannot die silently: a crash is logged, counted, and the task restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

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
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error(
            "background task failed while stopping",
            task=task.get_name(),
            exc_info=(type(error), error, error.__traceback__),
        )
