"""Time helpers the receiver and the workers share: retry back-off and timestamps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime


def backoff(delays: Sequence[float], failures: int) -> float:
    """The pause after `failures` failures in a row: `delays` in turn, then the last one."""
    return delays[min(failures, len(delays) - 1)]


def iso_utc(moment: datetime) -> str:
    """An aware UTC time as ISO 8601 to the millisecond, with `Z`."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
