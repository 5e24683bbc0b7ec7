"""Whether RabbitMQ has blocked a connection, told the moment the broker says so.

During a memory or disk alarm RabbitMQ stops reading from connections that publish,
and tells them with `connection.blocked` (and `connection.unblocked` once every
alarm has cleared). aiormq reads both frames into a private event and offers no
callback, so a publisher cannot tell a blocked broker from a slow one.

This is the one module that reaches for that part of aiormq's private interface: the
connection's `_Connection__handle_connection_blocked` and `..._unblocked` handlers,
which are wrapped on the instance so that aiormq's own handling still runs first.
aiormq is pinned in constraints.txt, `check` runs when a connection is watched, and
`tests/test_blocking.py` fails loudly if an upgrade changes any of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiormq.abc import AbstractConnection

_BLOCKED = "_Connection__handle_connection_blocked"
_UNBLOCKED = "_Connection__handle_connection_unblocked"


class Incompatible(RuntimeError):
    """aiormq no longer handles the frames where this module expects: pin its version."""


def check(connection: AbstractConnection) -> None:
    """Raise `Incompatible` unless `connection` has the handlers `watch` wraps."""
    missing = [
        name for name in (_BLOCKED, _UNBLOCKED) if not callable(getattr(connection, name, None))
    ]
    if missing:
        raise Incompatible(f"aiormq connection lacks {', '.join(missing)}")


def watch(connection: AbstractConnection, on_change: Callable[[str | None], object]) -> None:
    """Call `on_change(reason)` when the broker blocks `connection`, `on_change(None)` when not.

    `on_change` runs on aiormq's reader task, after aiormq has handled the frame; it
    must not raise or wait.
    """
    check(connection)
    blocked = getattr(connection, _BLOCKED)
    unblocked = getattr(connection, _UNBLOCKED)

    async def on_blocked(frame: Any) -> None:
        await blocked(frame)
        on_change(str(getattr(frame, "reason", "") or "unknown"))

    async def on_unblocked(frame: Any) -> None:
        await unblocked(frame)
        on_change(None)

    # The reader looks the handler up on the instance, so these shadow the class's.
    setattr(connection, _BLOCKED, on_blocked)
    setattr(connection, _UNBLOCKED, on_unblocked)
