"""The durable local spool: an append-only, checksummed log of deliveries the broker could not take.

Layout of SPOOL_DIR:

    lock                       held by the one receiver that owns the directory
    00000000000000000007.seg   segments, oldest first; only the newest is written
    cursor                     how far the oldest segment has been drained
    corrupt/                   damaged stretches, moved aside for a human to read

Appends from concurrent requests are written together and made durable with one
fsync (group commit) before any of them is answered. A failed write is cut back
off the file, so a segment never holds half a record that was answered 200.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import structlog

from service.bus import Outgoing
from service.errors import RelayError
from service.spool_format import Damage, Record, encode, scan
from service.timing import backoff

log = structlog.get_logger("service.spool")

SEGMENT_SUFFIX = ".seg"
# A segment is read whole while draining, so it is kept small.
SEGMENT_BYTES = 4 * 1024 * 1024
DRAIN_BATCH = 256
DRAIN_RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)
# After a failed write the spool counts as unavailable for this long, then tries again.
WRITE_RETRY_SECONDS = 5.0


class SpoolError(RelayError):
    """The spool cannot take a delivery; the answer is 503."""


class SpoolFull(SpoolError):
    """SPOOL_MAX_BYTES is reached."""


class SpoolWriteFailed(SpoolError):
    """The write or its fsync failed, for instance on a full disk."""


class SpoolUnusable(RelayError):
    """The spool directory cannot be used: not writable, or held by another receiver."""


@dataclass(frozen=True, slots=True)
class Depth:
    """How much waits in the spool."""

    records: int
    bytes: int


class Spool:
    """One receiver's spool directory. Use `Spool.open`, then `append`, `drain` and `close`."""

    def __init__(self, directory: Path, max_bytes: int, lock_fd: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock_fd = lock_fd
        self._segments: list[int] = []
        self._cursor = 0  # offset drained in the oldest segment
        self._records = 0
        self._bytes = 0
        self._reserved = 0
        self._active = 0
        self._active_fd = -1
        self._committed = 0  # bytes of the active segment that are durable
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._appended = asyncio.Event()
        self._failed_at: float | None = None
        # The largest record seen, as the room a next delivery is likely to need.
        self._largest = 1024

    @classmethod
    def open(cls, directory: Path, *, max_bytes: int) -> Spool:
        """Lock the directory, count what waits in it, and start a fresh segment for writes."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolUnusable(f"{directory}: {exc.strerror}") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise SpoolUnusable(
                f"{directory} is in use by another receiver; each receiver needs its own"
            ) from None
        spool = cls(directory, max_bytes, lock_fd)
        try:
            spool._load()
        except OSError as exc:
            os.close(lock_fd)
            raise SpoolUnusable(f"{directory}: {exc.strerror}") from None
        return spool

    def __repr__(self) -> str:
        return f"Spool({str(self.directory)!r}, records={self._records}, bytes={self._bytes})"

    @property
    def depth(self) -> Depth:
        return Depth(self._records, self._bytes)

    @property
    def accepting(self) -> bool:
        """Whether a delivery could be spooled now."""
        room = self.max_bytes - self._bytes - self._reserved
        return not self._recently_failed() and room >= self._largest

    def _recently_failed(self) -> bool:
        failed_at = self._failed_at
        return failed_at is not None and time.monotonic() - failed_at < WRITE_RETRY_SECONDS

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:020d}{SEGMENT_SUFFIX}"

    def _load(self) -> None:
        self._segments = sorted(
            int(path.stem)
            for path in self.directory.glob(f"*{SEGMENT_SUFFIX}")
            if path.stem.isdigit()
        )
        self._cursor = self._read_cursor()
        for index, segment in enumerate(self._segments):
            data = self._path(segment).read_bytes()
            start = self._cursor if index == 0 else 0
            for item in scan(data, start):
                if isinstance(item, Record):
                    self._records += 1
                    self._bytes += item.end - item.start
        self._open_active(max(self._segments, default=0) + 1)
        if self._records:
            log.info(
                "spool holds deliveries from an earlier run",
                records=self._records,
                bytes=self._bytes,
            )

    def _read_cursor(self) -> int:
        try:
            saved = orjson.loads((self.directory / "cursor").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return 0
        if self._segments and saved.get("segment") == self._segments[0]:
            return int(saved.get("offset", 0))
        return 0

    def _save_cursor(self) -> None:
        temporary = self.directory / "cursor.tmp"
        segment = self._segments[0] if self._segments else 0
        with temporary.open("wb") as file:
            file.write(orjson.dumps({"segment": segment, "offset": self._cursor}))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.directory / "cursor")

    def _open_active(self, segment: int) -> None:
        fd = os.open(self._path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._sync_directory()
        if self._active_fd >= 0:
            os.close(self._active_fd)
        self._active, self._active_fd, self._committed = segment, fd, 0
        self._segments.append(segment)

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def append(self, message: Outgoing) -> None:
        """Return once `message` is durably on disk; raise `SpoolError` if it cannot be."""
        record = encode(message)
        self._largest = max(self._largest, len(record))
        if self._bytes + self._reserved + len(record) > self.max_bytes:
            raise SpoolFull(f"spool holds {self._bytes} bytes; SPOOL_MAX_BYTES is {self.max_bytes}")
        done = asyncio.get_running_loop().create_future()
        self._pending.append((record, done))
        self._reserved += len(record)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await asyncio.shield(done)

    async def _flush(self) -> None:
        async with self._write_lock:
            while self._pending:
                batch, self._pending = self._pending, []
                data = b"".join(record for record, _ in batch)
                self._reserved -= len(data)
                try:
                    await asyncio.to_thread(self._write, data)
                except OSError as exc:
                    self._failed_at = time.monotonic()
                    log.error("spool write failed", error=os.strerror(exc.errno or errno.EIO))
                    for _, done in batch:
                        done.set_exception(SpoolWriteFailed(str(exc.strerror)))
                    continue
                was_empty = self._records == 0
                self._failed_at = None
                self._committed += len(data)
                self._records += len(batch)
                self._bytes += len(data)
                for _, done in batch:
                    done.set_result(None)
                if was_empty:
                    log.warning("spooling started: the broker cannot confirm deliveries")
                self._appended.set()
                if self._committed >= SEGMENT_BYTES:
                    await asyncio.to_thread(self._open_active, self._active + 1)

    def _write(self, data: bytes) -> None:
        """Write and fsync `data`; on failure cut the segment back to where it was."""
        start = self._committed
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._active_fd, view)
                view = view[written:]
            os.fdatasync(self._active_fd)
        except OSError:
            try:
                os.ftruncate(self._active_fd, start)
            except OSError:
                # The tail cannot be cut: write on in a new segment instead.
                self._open_active(self._active + 1)
            raise

    async def drain(
        self,
        publish: Callable[[Outgoing], Awaitable[None]],
        ready: Callable[[], bool],
        on_drained: Callable[[int], object] = lambda count: None,
    ) -> None:
        """Republish spooled deliveries, oldest first, for as long as the task runs.

        `on_drained` hears how many records each confirmed batch removed.
        """
        failures = 0
        while True:
            if self._records == 0 and not self._has_damage_left():
                self._appended.clear()
                await self._appended.wait()
                continue
            if not ready():
                await asyncio.sleep(0.2)
                continue
            if await self._drain_batch(publish, on_drained):
                failures = 0
            else:
                await asyncio.sleep(backoff(DRAIN_RETRY_DELAYS, failures))
                failures += 1

    def _has_damage_left(self) -> bool:
        # Segments older than the active one may still hold damage to move aside.
        return len(self._segments) > 1

    async def _drain_batch(
        self,
        publish: Callable[[Outgoing], Awaitable[None]],
        on_drained: Callable[[int], object] = lambda count: None,
    ) -> bool:
        """Publish the next batch; advance past the confirmed prefix. False if nothing moved."""
        segment = self._segments[0]
        limit = self._committed if segment == self._active else None
        data = await asyncio.to_thread(self._path(segment).read_bytes)
        if limit is not None:
            data = data[:limit]
        items = []
        for item in scan(data, self._cursor):
            items.append(item)
            if len(items) >= DRAIN_BATCH:
                break
        if not items:
            return await self._finish_segment(segment)
        records = [item for item in items if isinstance(item, Record)]
        results = await asyncio.gather(
            *(publish(record.message) for record in records), return_exceptions=True
        )
        outcome = dict(zip((id(r) for r in records), results, strict=True))
        moved = False
        drained = 0
        for item in items:
            if isinstance(item, Damage):
                await asyncio.to_thread(
                    self._move_aside, segment, data[item.start : item.end], item.start
                )
            elif outcome[id(item)] is not None:
                break
            else:
                self._records -= 1
                self._bytes -= item.end - item.start
                drained += 1
            self._cursor = item.end
            moved = True
        if moved:
            await asyncio.to_thread(self._save_cursor)
            if drained:
                on_drained(drained)
            if self._records == 0:
                log.info("spool drained")
        return moved

    async def _finish_segment(self, segment: int) -> bool:
        """Remove a segment that is drained to its end; roll the active one over first."""
        async with self._write_lock:
            if self._pending:
                return True
            if segment == self._active:
                if self._committed == 0:
                    return True
                self._open_active(self._active + 1)
            self._segments.remove(segment)
            self._cursor = 0
            await asyncio.to_thread(self._remove, segment)
        return True

    def _remove(self, segment: int) -> None:
        self._save_cursor()
        self._path(segment).unlink(missing_ok=True)
        self._sync_directory()

    def _move_aside(self, segment: int, data: bytes, offset: int) -> None:
        corrupt = self.directory / "corrupt"
        corrupt.mkdir(exist_ok=True)
        target = corrupt / f"{segment:020d}-{offset}.bin"
        target.write_bytes(data)
        log.error("corrupt spool record moved aside", file=str(target), bytes=len(data))

    async def close(self) -> None:
        """Finish pending writes and release the directory; records stay for the next start."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._active_fd >= 0:
            os.close(self._active_fd)
            self._active_fd = -1
        os.close(self._lock_fd)
