"""The worker's thread pool, which knows whether handler threads are still running at exit.

Handlers reach threads through `asyncio.to_thread` (an fsync, a blocking client). A
cancelled handler's thread runs on, and Python waits for every pool thread before a
process may exit, so one stuck call could hold a stopping worker for ever. Knowing
they are there, the worker exits without them once its messages are settled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class HandlerThreads(ThreadPoolExecutor):
    """A thread pool that counts the calls it has not finished."""

    def __init__(self) -> None:
        super().__init__(thread_name_prefix="handler")
        self._lock = threading.Lock()
        self._unfinished = 0

    @property
    def unfinished(self) -> int:
        """Calls submitted and not yet returned."""
        return self._unfinished

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            self._unfinished += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: Future[Any]) -> None:
        with self._lock:
            self._unfinished -= 1
