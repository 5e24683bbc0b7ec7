"""What a call to Avionté's API can fail with, and what the worker does with each.

AvionteError
├── AvionteUnavailable   429, 5xx, a timeout, a refused connection, a repeated 401:
│                        retryable (a `RetryLater`: the worker's retry queue, at least
│                        Retry-After or Avionté's asked-for 5 s later)
├── EntityGone           404: the entity was deleted; a `Reject`, so dead at once
│                        unless the handler catches it
├── AvionteRejected      another 4xx (the request is wrong): a `Reject`
└── UnmappedEvent        the event names no entity this client can fetch: a `Reject`
"""

from __future__ import annotations

from consumers.errors import Reject, RetryLater

# Avionté asks clients to back off 5 s, then 10 s, doubling.
FIRST_BACKOFF = 5.0


class AvionteError(Exception):
    """A call to Avionté's API failed."""


class AvionteUnavailable(AvionteError, RetryLater):
    """Avionté cannot answer now; try again later."""

    def __init__(self, message: str, *, after: float = FIRST_BACKOFF) -> None:
        AvionteError.__init__(self, message)
        self.after = after


class EntityGone(AvionteError, Reject):
    """Avionté answered 404: the entity the event named no longer exists."""


class AvionteRejected(AvionteError, Reject):
    """Avionté refused the request itself (a 4xx other than 401, 404 and 429)."""


class UnmappedEvent(AvionteError, Reject):
    """The event names no entity with a documented endpoint: fetching it would be a guess."""
