"""Example consumer: append every event as one JSON line to a file per UTC day.

The directory comes from `AUDIT_LOG_DIR` (default `./audit-log`). Each line is
flushed and fsynced before the handler returns, so an acked event is on disk.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC
from pathlib import Path

import orjson

from consumers import Consumer, Event


class AuditLog:
    """Appends events to `<directory>/<YYYY-MM-DD>.jsonl`, by the UTC day they were received."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory

    async def __call__(self, event: Event) -> None:
        directory = self.directory or Path(os.environ.get("AUDIT_LOG_DIR", "audit-log"))
        day = event.received_at.astimezone(UTC).strftime("%Y-%m-%d")
        await asyncio.to_thread(_append, directory / f"{day}.jsonl", audit_line(event))


def audit_line(event: Event) -> bytes:
    """One JSON line for `event`, its payload written as received.

    The body is JSON already (the receiver publishes nothing else), and serialising it
    again could fail where parsing did not (orjson stops at 255 levels of nesting).
    Newlines in valid JSON lie outside strings, so they are only whitespace.
    """
    head = orjson.dumps(
        {
            "received_at": event.received_at.isoformat(),
            "event_name": event.name,
            "routing_key": event.routing_key,
            "tenant_id": event.tenant_id,
            "message_id": event.message_id,
            "correlation_id": event.correlation_id,
            "attempt": event.attempt,
        }
    )
    payload = event.body.strip().replace(b"\r", b" ").replace(b"\n", b" ")
    return head[:-1] + b',"payload":' + payload + b"}\n"


def _append(path: Path, line: bytes) -> None:
    created = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write() on an O_APPEND file: lines from concurrent handlers never interleave.
    with path.open("ab") as file:
        file.write(line)
        file.flush()
        os.fsync(file.fileno())
    if created:
        # The day's new file is only durable once its directory entry is.
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


record = AuditLog()
consumer = Consumer("audit-log")
consumer.on("#")(record)
