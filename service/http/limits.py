"""File descriptors: MAX_CONNECTIONS must leave room under RLIMIT_NOFILE for the spool and broker.

Every open connection holds a descriptor. If clients could take them all, the spool
could no longer open a segment or save its cursor, and the broker connection could
not be made again. So at start the receiver sets aside `RESERVED` descriptors for
itself and fits the connection cap into the rest, raising the soft limit toward the
hard one first where that is allowed.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

import structlog

from service.shared.errors import SettingsError

log = structlog.get_logger("service.limits")

DEFAULT_MAX_CONNECTIONS = 1024
# A receiver with a spool and a broker connection holds 19 (stdio, the event loop's
# own, the listening socket, the spool's lock and segment, the broker socket). Draining
# and reconnecting open a few more at once: a segment read, the cursor, the directory,
# a moved-aside record, a second broker socket and a DNS lookup.
RESERVED = 40


@dataclass(frozen=True, slots=True)
class Fitted:
    """The connection cap the receiver runs with, and the descriptor limit it runs under."""

    max_connections: int
    nofile: int


def fit_connections(configured: int | None) -> Fitted:
    """The cap for `configured` (None: the default, lowered to fit); raise if a set value cannot.

    The soft RLIMIT_NOFILE is raised as far as needed, up to the hard limit.
    """
    wanted = configured if configured is not None else DEFAULT_MAX_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if raised > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return Fitted(wanted, soft)
    room = soft - RESERVED
    if configured is not None or room < 1:
        raise SettingsError(
            "MAX_CONNECTIONS",
            f"{wanted} connections need {needed} file descriptors, but the process may open "
            f"{soft} (RLIMIT_NOFILE, hard limit {hard}); lower MAX_CONNECTIONS to at most "
            f"{max(room, 0)} or raise the limit",
        )
    log.warning(
        "MAX_CONNECTIONS lowered to fit the file-descriptor limit",
        max_connections=room,
        nofile=soft,
        reserved=RESERVED,
    )
    return Fitted(room, soft)
