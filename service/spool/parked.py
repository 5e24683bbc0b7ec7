"""Parked spool records: deliveries the broker refused again and again, kept for an operator.

Each parked record is one file in `SPOOL_DIR/parked/`: a line of JSON saying why it
was parked, then the record exactly as the spool held it (framed and checksummed).
The receiver only ever adds files there; `python -m service parked --replay` publishes
them again and removes each one after its confirm.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from service.shared.bus import Outgoing
from service.shared.timing import iso_utc
from service.spool.format import Record, scan

PARKED_DIR = "parked"
SUFFIX = ".rec"


@dataclass(frozen=True, slots=True)
class Parked:
    """One parked record: its file, why it was parked, and the message (None if damaged)."""

    path: Path
    reason: str
    attempts: int
    parked_at: str
    message: Outgoing | None

    def summary(self) -> dict[str, Any]:
        message = self.message
        return {
            "file": self.path.name,
            "reason": self.reason,
            "attempts": self.attempts,
            "parked_at": self.parked_at,
            "exchange": message.exchange if message else None,
            "routing_key": message.routing_key if message else None,
            "message_id": message.message_id if message else None,
        }


class ParkedRecords:
    """The `parked/` folder of one spool directory."""

    def __init__(self, spool_dir: Path) -> None:
        self.directory = spool_dir / PARKED_DIR

    def count(self) -> int:
        """How many records are parked now."""
        try:
            return sum(1 for _ in self.directory.glob(f"*{SUFFIX}"))
        except OSError:
            return 0

    def park(self, name: str, record: bytes, *, reason: str, attempts: int) -> Path:
        """Keep `record` durably under `name`; raise OSError if it cannot be written."""
        self.directory.mkdir(exist_ok=True)
        meta = {"reason": reason, "attempts": attempts, "parked_at": iso_utc(datetime.now(UTC))}
        target = self.directory / f"{name}{SUFFIX}"
        temporary = target.with_suffix(".tmp")
        with temporary.open("wb") as file:
            file.write(orjson.dumps(meta) + b"\n" + record)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return target

    def read(self) -> Iterator[Parked]:
        """Every parked record, oldest name first."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            yield _load(path)

    def remove(self, parked: Parked) -> None:
        parked.path.unlink(missing_ok=True)


def _load(path: Path) -> Parked:
    data = path.read_bytes()
    head, _, record = data.partition(b"\n")
    try:
        meta = orjson.loads(head)
        reason, attempts, parked_at = str(meta["reason"]), int(meta["attempts"]), meta["parked_at"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        reason, attempts, parked_at = "unknown", 0, ""
    records = [item for item in scan(record) if isinstance(item, Record)]
    message = records[0].message if len(records) == 1 else None
    return Parked(path, reason, attempts, str(parked_at), message)
