"""The durable local spool: an append-only, checksummed log of deliveries the broker could not take.

Layout of SPOOL_DIR:

    lock                       held by the one receiver that owns the directory
    00000000000000000007.seg   segments, oldest first; only the newest is written
    cursor                     how far the oldest segment has been drained
    corrupt/                   damaged stretches, moved aside for a human to read
    parked/                    records the broker refused again and again (`spool_parked`)

Appends from concurrent requests are written together and made durable with one
fsync (group commit) before any of them is answered. Each batch is written at the
segment's committed length, so a failed write leaves nothing that a later one could
be mistaken for; the drain (`spool_drain`) reads a segment only up to that length.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import structlog

from service.shared.bus import Outgoing
from service.shared.errors import RelayError
from service.spool.format import Record, encode, scan

log = structlog.get_logger("service.spool")

SEGMENT_SUFFIX = ".seg"
# A segment is read whole while draining, so it is kept small.
SEGMENT_BYTES = 4 * 1024 * 1024
# After a failed write the spool counts as unavailable for this long, then tries again.
WRITE_RETRY_SECONDS = 5.0

Ranges = tuple[tuple[int, int], ...]


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


def strerror(exc: OSError) -> str:
    """The system's text for an OS error, never a path or other detail."""
    return os.strerror(exc.errno or errno.EIO)


class Spool:
    """One receiver's spool directory. Use `Spool.open`, then `append`, and `close`.

    The drain reads the oldest segment (`read_oldest`), then reports its progress
    (`advance`, `finish`); it never touches the files itself.
    """

    def __init__(self, directory: Path, max_bytes: int, lock_fd: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock_fd = lock_fd
        self._segments: list[int] = []
        # Committed bytes of each segment written by this run; older ones are read whole.
        self._lengths: dict[int, int] = {}
        self._cursor = 0  # offset drained in the oldest segment
        self._done: Ranges = ()  # confirmed stretches of the oldest segment past the cursor
        self._records = 0
        self._bytes = 0
        self._reserved = 0
        self._active = 0
        self._active_fd = -1
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._appended = asyncio.Event()
        self._failed_at: float | None = None
        self._write_error: str | None = None
        # The largest record seen, as the room a next delivery is likely to need.
        self._largest = 1024
        # A failed write may have left bytes past the committed end that could not be cut.
        self._dirty_tail = False

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

    @property
    def has_work(self) -> bool:
        """Records wait, or segments older than the active one may still hold damage."""
        return self._records > 0 or len(self._segments) > 1

    async def wait_for_records(self) -> None:
        """Return once something may have been appended since the last call."""
        self._appended.clear()
        if not self.has_work:
            await self._appended.wait()

    @property
    def write_error(self) -> str | None:
        """Why the last write failed, while the spool counts as unavailable for it."""
        return self._write_error if self._recently_failed() else None

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
        saved_segment = self._read_cursor()
        for index, segment in enumerate(self._segments):
            data = self._path(segment).read_bytes()
            start = self._cursor if index == 0 else 0
            done = self._done if index == 0 else ()
            for item in scan(data, start):
                if isinstance(item, Record) and not within(done, item.start):
                    self._records += 1
                    self._bytes += item.end - item.start
        # Never reuse the number a stale cursor names: it would apply to the wrong file.
        self._open_active(max([*self._segments, saved_segment], default=0) + 1)
        if self._records:
            log.info(
                "spool holds deliveries from an earlier run",
                records=self._records,
                bytes=self._bytes,
            )

    def _read_cursor(self) -> int:
        """Restore the cursor if it names the oldest segment; return the segment it names."""
        try:
            saved = orjson.loads((self.directory / "cursor").read_bytes())
            segment = int(saved.get("segment", 0))
            offset = int(saved.get("offset", 0))
            done = tuple((int(a), int(b)) for a, b in saved.get("done", ()))
        except (OSError, orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            return 0
        if self._segments and segment == self._segments[0]:
            self._cursor, self._done = offset, done
        return segment

    def _write_cursor(self, segment: int, offset: int, done: Ranges) -> None:
        temporary = self.directory / "cursor.tmp"
        state = {"segment": segment, "offset": offset, "done": [list(r) for r in done]}
        with temporary.open("wb") as file:
            file.write(orjson.dumps(state))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.directory / "cursor")

    def _open_active(self, segment: int) -> None:
        fd = os.open(self._path(segment), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            self._sync_directory()
        except OSError:
            os.close(fd)
            raise
        if self._active_fd >= 0:
            os.close(self._active_fd)
        self._active, self._active_fd = segment, fd
        self._lengths[segment] = 0
        self._segments.append(segment)

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # Writing.

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
            self._flusher = asyncio.create_task(self._flush(), name="spool-flusher")
        await asyncio.shield(done)

    async def _flush(self) -> None:
        batch: list[tuple[bytes, asyncio.Future[None]]] = []
        try:
            async with self._write_lock:
                while self._pending:
                    batch, self._pending = self._pending, []
                    data = b"".join(record for record, _ in batch)
                    self._reserved -= len(data)
                    await self._write_batch(data, batch)
                    batch = []
        except Exception:
            log.exception("spool writer failed")
            raise
        finally:
            # Whatever stopped this task, no append may wait for it forever.
            for _, waiting in [*batch, *self._pending]:
                if not waiting.done():
                    waiting.set_exception(SpoolWriteFailed("the spool writer stopped"))
            if self._pending:
                self._reserved -= sum(len(record) for record, _ in self._pending)
                self._pending = []

    async def _write_batch(
        self, data: bytes, batch: list[tuple[bytes, asyncio.Future[None]]]
    ) -> None:
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as exc:
            self._failed(exc)
            for _, waiting in batch:
                waiting.set_exception(SpoolWriteFailed(strerror(exc)))
            return
        was_empty = self._records == 0
        if self._write_error is not None:
            log.info("spool writes work again")
        self._failed_at = self._write_error = None
        self._lengths[self._active] += len(data)
        self._records += len(batch)
        self._bytes += len(data)
        for _, waiting in batch:
            waiting.set_result(None)
        if was_empty:
            log.warning("spooling started: the broker cannot confirm deliveries")
        self._appended.set()
        if self._lengths[self._active] >= SEGMENT_BYTES:
            try:
                await asyncio.to_thread(self._open_active, self._active + 1)
            except OSError as exc:
                # Writes go on in the current segment; the next batch tries again.
                log.error("spool segment not started", error=strerror(exc))

    def _failed(self, exc: OSError) -> None:
        # One line per streak of failures; each delivery's own line says 503.
        if self._write_error is None:
            log.error("spool write failed", error=strerror(exc))
        self._failed_at = time.monotonic()
        self._write_error = strerror(exc)

    def _write(self, data: bytes) -> None:
        """Write and fsync `data` at the committed end of the active segment."""
        start = self._lengths[self._active]
        try:
            view = memoryview(data)
            offset = start
            while view:
                written = os.pwrite(self._active_fd, view, offset)
                view, offset = view[written:], offset + written
            if self._dirty_tail:
                os.ftruncate(self._active_fd, offset)
            os.fdatasync(self._active_fd)
        except OSError:
            # The next batch is written at `start` again, over what is left; the cut only
            # keeps a later run (which reads the file whole) from finding leftovers.
            try:
                os.ftruncate(self._active_fd, start)
            except OSError:
                self._dirty_tail = True
            raise
        self._dirty_tail = False

    # What the drain uses.

    @property
    def cursor(self) -> tuple[int, Ranges]:
        """The drained offset in the oldest segment, and confirmed stretches past it."""
        return self._cursor, self._done

    async def read_oldest(self) -> tuple[int, bytes]:
        """The oldest segment's number and its bytes, only as far as they are committed."""
        segment = self._segments[0]
        length = self._lengths.get(segment)
        try:
            data = await asyncio.to_thread(self._path(segment).read_bytes)
        except FileNotFoundError:
            data = b""  # removed by hand: nothing to drain, and `finish` forgets it
        return segment, data if length is None else data[:length]

    def forget(self, records: int, size: int) -> None:
        """`records` of `size` bytes left the spool (confirmed, parked)."""
        self._records -= records
        self._bytes -= size

    async def advance(self, segment: int, cursor: int, done: Ranges) -> str | None:
        """Move the cursor of the oldest segment; return why it could not be saved, if not."""
        if segment != self._segments[0]:
            return None
        self._cursor, self._done = cursor, done
        try:
            await asyncio.to_thread(self._write_cursor, segment, cursor, done)
        except OSError as exc:
            # Progress stands in memory; a crash before the next save only republishes.
            return strerror(exc)
        return None

    async def finish(self, segment: int) -> bool:
        """Remove the oldest segment if it is drained to its end; True if it was removed.

        Not while records committed after the drain read it wait there (the segment may
        have been rolled over meanwhile); the active segment is rolled over first.
        """
        async with self._write_lock:
            length = self._lengths.get(segment)
            if length is not None and self._cursor < length:
                return False
            if segment == self._active:
                if self._pending or length == 0:
                    return False
                await asyncio.to_thread(self._open_active, self._active + 1)
            await asyncio.to_thread(self._path(segment).unlink, missing_ok=True)
            self._segments.remove(segment)
            self._lengths.pop(segment, None)
            self._cursor, self._done = 0, ()
        # A removal the directory forgets in a crash only means draining that segment again.
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self._sync_directory)
        # The cursor file may now name a removed segment, which means "start the next at 0".
        # Saving it is tidiness, so a full disk does not keep the segment here.
        next_segment = self._segments[0]
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self._write_cursor, next_segment, 0, ())
        return True

    def move_aside(self, segment: int, data: bytes, offset: int) -> Path:
        """Copy damaged bytes to `corrupt/`, durably, for a human to read."""
        corrupt = self.directory / "corrupt"
        corrupt.mkdir(exist_ok=True)
        target = corrupt / f"{segment:020d}-{offset}.bin"
        with target.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        return target

    async def close(self) -> None:
        """Finish pending writes and release the directory; records stay for the next start."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        for fd in (self._active_fd, self._lock_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError as exc:
                    log.warning("spool file not closed cleanly", error=strerror(exc))
        self._active_fd = self._lock_fd = -1


def within(ranges: Ranges, offset: int) -> bool:
    """Whether `offset` falls in one of `ranges`."""
    return any(start <= offset < end for start, end in ranges)
