"""Times as the console shows them: in UTC, saying so, with how long ago."""

from __future__ import annotations

from datetime import UTC, datetime


def when(moment: datetime | None) -> str:
    """`2026-12-03 04:05:06 UTC`; a time without a zone is taken as UTC."""
    if moment is None:
        return "—"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago: `40 s`, `12 min`, `3 h 5 min`, `2 d 4 h`."""
    if moment is None:
        return "—"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def when_unix(seconds: float) -> str:
    """`when` for Unix seconds; `—` for none (0)."""
    return when(datetime.fromtimestamp(seconds, UTC)) if seconds else "—"
