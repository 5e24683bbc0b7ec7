"""Time helpers the receiver and the workers share: retry back-off and timestamps."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime


def backoff(delays: Sequence[float], failures: int) -> float:
    """The pause after `failures` failures in a row: `delays` in turn, then the last one."""
    return delays[min(failures, len(delays) - 1)]


def iso_utc(moment: datetime) -> str:
    """An aware UTC time as ISO 8601 to the millisecond, with `Z`."""
    if moment.tzinfo is not UTC:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    # floor, not int: a moment before 1970 has a negative timestamp.
    return f"{utc_second(math.floor(moment.timestamp()))}.{moment.microsecond // 1000:03d}Z"


# The last second formatted: a delivery's header and log line are made within one.
_SECOND: tuple[int, str] = (-1, "")


def utc_second(second: int) -> str:
    """A second since the epoch as `YYYY-MM-DDTHH:MM:SS` in UTC, formatted once a second."""
    global _SECOND
    cached = _SECOND
    if cached[0] != second:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cached = _SECOND = (second, text)
    return cached[1]


def utc_now() -> str:
    """Now, as ISO 8601 in UTC to the microsecond with `Z`, as every log line is stamped."""
    return utc_text(time.time_ns())


def utc_text(ns: int) -> str:
    """A time in nanoseconds since the epoch, as ISO 8601 in UTC to the microsecond with `Z`."""
    second, micros = divmod(ns // 1000, 1_000_000)
    return f"{utc_second(second)}.{micros:06d}Z"
