"""What a run did: each fault and command, planned and actual, with what came of it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Done:
    """One fault or command: when it was planned, when it ran, and its result."""

    what: str
    target: str
    planned: float
    started: float = 0.0
    ended: float = 0.0
    result: str = ""


@dataclass
class Journal:
    """Every `Done`, timed from the run's start."""

    origin: float = field(default_factory=time.monotonic)
    entries: list[Done] = field(default_factory=list)
    void: bool = False
    held_back: int = 0
    # What the console answered once the faults were over: every page, or what failed.
    console_after: str = ""

    def now(self) -> float:
        return time.monotonic() - self.origin

    def begin(self, what: str, target: str, planned: float) -> Done:
        done = Done(what, target, planned, started=self.now())
        self.entries.append(done)
        return done

    def end(self, done: Done, result: str = "ok") -> None:
        done.ended = self.now()
        done.result = result

    def table(self) -> list[str]:
        lines = [f"{'planned':>8} {'start':>7} {'end':>7}  {'what':<18} {'target':<12} result"]
        for done in sorted(self.entries, key=lambda entry: entry.started):
            lines.append(
                f"{done.planned:8.1f} {done.started:7.1f} {done.ended:7.1f}  "
                f"{done.what:<18} {done.target:<12} {done.result}"
            )
        return lines
