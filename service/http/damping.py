"""Damping of failed authentication: a source with too many 401s in a window gets 429s.

Only failures are counted and only failures are turned away, so a source that
authenticates is never throttled. The table of sources is bounded; the least
recently seen are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

MAX_SOURCES = 10_000


@dataclass(slots=True)
class _Window:
    started: float
    failures: int


class FailureDamper:
    """Counts failures per source in fixed windows; `limit` 0 turns damping off."""

    def __init__(self, *, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._sources: OrderedDict[str, _Window] = OrderedDict()

    def _current(self, source: str, now: float) -> _Window:
        entry = self._sources.get(source)
        if entry is None or now - entry.started >= self.window:
            entry = _Window(now, 0)
            self._sources[source] = entry
        self._sources.move_to_end(source)
        while len(self._sources) > MAX_SOURCES:
            self._sources.popitem(last=False)
        return entry

    def fail(self, source: str, now: float) -> float | None:
        """Record a failure; return the seconds to wait if the source is now damped."""
        if self.limit <= 0:
            return None
        entry = self._current(source, now)
        entry.failures += 1
        if entry.failures > self.limit:
            return max(1.0, entry.started + self.window - now)
        return None
