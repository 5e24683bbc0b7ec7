"""Resources a worker process's handlers share: made on first use, closed when it stops.

A handler asks for one by name (`shared("avionte", factory)`); every handler of the
process gets the same object, so a connection pool, a token and a rate limit are per
process. The worker closes them all after its handlers have drained.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import structlog

log = structlog.get_logger("consumers.resources")


class Closable(Protocol):
    def close(self) -> Awaitable[None]: ...


R = TypeVar("R", bound=Closable)

_SHARED: dict[str, Closable] = {}


def shared(name: str, factory: Callable[[], R]) -> R:
    """The process's resource `name`, made by `factory` the first time it is asked for."""
    found = _SHARED.get(name)
    if found is None:
        found = _SHARED[name] = factory()
    return found  # type: ignore[return-value]


async def close_all() -> None:
    """Close every shared resource; one that fails to close is logged, the rest still close."""
    while _SHARED:
        await _close(*_SHARED.popitem())


async def close(name: str) -> None:
    """Close the resource `name` if it was made; the next `shared(name, ...)` makes another.

    `consumers.testing.avionte_api` points the Avionté client elsewhere with it.
    """
    resource = _SHARED.pop(name, None)
    if resource is not None:
        await _close(name, resource)


async def _close(name: str, resource: Closable) -> None:
    try:
        await resource.close()
    except Exception:
        log.exception("a shared resource did not close cleanly", resource=name)
