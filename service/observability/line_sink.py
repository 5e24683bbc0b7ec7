"""Log lines written once a turn of the event loop, not once a line.

Under load a receiver finishes many deliveries in one turn of its event loop (one
frame of confirms wakes them together), and each line was a write system call of its
own. Once a server has started (`gather_on`), a line logged on its loop's thread is kept
and written with the others of that turn by a callback on the loop's next turn. A line
from another thread, or while no loop runs, is written at once, after anything kept,
so the order holds. What is kept is written at exit, and when the server stops.

Lost, at most: the lines of the turn during which the process is killed outright.
"""

from __future__ import annotations

import asyncio
import atexit
import io
import threading
from typing import Any, BinaryIO


class LineSink(io.RawIOBase):
    """A binary stream over `out` that writes what a turn of the loop logged at once."""

    def __init__(self, out: BinaryIO) -> None:
        super().__init__()
        self._out = out
        self._kept: list[bytes] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._scheduled = False
        atexit.register(self.drain)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        line = bytes(data)
        with self._lock:
            self._kept.append(line)
        return len(line)

    def flush(self) -> None:
        """Write now, or on the loop's next turn when called on its thread while it runs."""
        loop = self._loop
        if loop is not None and threading.get_ident() == self._thread and loop.is_running():
            if not self._scheduled:
                self._scheduled = True
                loop.call_soon(self.drain)
            return
        self.drain()

    def gather_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """From now on, lines logged on `loop`'s thread (the caller's) go out once a turn."""
        self._loop = loop
        self._thread = threading.get_ident()

    def release(self) -> None:
        """Write what is kept, and write every line at once from now on."""
        self._loop = None
        self.drain()

    def drain(self) -> None:
        """Write what is kept."""
        with self._lock:
            self._scheduled = False
            kept, self._kept = self._kept, []
            if not kept:
                return
            try:
                self._out.write(b"".join(kept))
                self._out.flush()
            except (OSError, ValueError):
                # The stream is gone (a closed pipe): there is no one left to tell, and a
                # log call must never fail the delivery that made it.
                pass
