"""What every chaos consumer shares: where handlings are written, and the seeded shares.

A handling is one line, the message id, appended with one `write` to
`{CHAOS_LEDGER_DIR}/{consumer}.handled` (O_APPEND: lines of several replicas never
interleave). Which messages fail once, or are rejected, is a hash of the consumer's name
and the message id, so the ledger knows it without asking anyone.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# The retry delays of every chaos consumer: short, so that the run drains quickly.
RETRY_DELAYS = (1.0, 2.0, 4.0)
FAIL_SHARE = 0.10
REJECT_SHARE = 0.05
# CHAOS_BREAK=skip makes `plain` ack one message in this many without running it.
BROKEN_ONE_IN = 500


def _fraction(*parts: str) -> float:
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def fails_once(consumer: str, message_id: str) -> bool:
    """This message's first attempt at this consumer raises (a seeded share)."""
    return _fraction("fail", consumer, message_id) < FAIL_SHARE


def rejected(consumer: str, message_id: str) -> bool:
    """This consumer rejects this message: it is dead-lettered on purpose."""
    return _fraction("reject", consumer, message_id) < REJECT_SHARE


def sabotaged(message_id: str) -> bool:
    """With CHAOS_BREAK=skip, the messages `plain` acks without running."""
    return _fraction("break", message_id) < 1 / BROKEN_ONE_IN


def handled_path(directory: Path, consumer: str) -> Path:
    return directory / f"{consumer}.handled"


def record(consumer: str, message_id: str) -> None:
    """Append one handling of `message_id` to this consumer's file."""
    path = handled_path(Path(os.environ["CHAOS_LEDGER_DIR"]), consumer)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{message_id}\n".encode())
    finally:
        os.close(fd)


class SeededFailure(RuntimeError):
    """The failure a chaos handler raises on purpose, once; its retry succeeds."""
