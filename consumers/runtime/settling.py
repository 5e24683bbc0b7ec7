"""Small steps a worker takes with a message or a channel, that must never decide its fate.

A log call that fails, an ack on a channel that closed, a shutdown step without a link:
each is logged, or bounded, and the broker's redelivery does the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger("consumers.worker")

# Shutdown steps that talk to the broker get this long; without a link they cannot finish.
STEP_TIMEOUT = 5.0


def quietly(method: Callable[..., Any], event: str, **fields: Any) -> None:
    """Log, but never let a failing log call decide a message's fate."""
    with contextlib.suppress(Exception):  # there is nowhere left to report it
        method(event, **fields)


async def bounded(step: Awaitable[object], what: str) -> None:
    """A step that may fail or hang without a link; the broker requeues what is left."""
    try:
        await asyncio.wait_for(step, STEP_TIMEOUT)
    except Exception as exc:
        log.warning(f"could not {what}", error_type=type(exc).__name__)


async def settle(step: Awaitable[None]) -> None:
    """Ack or nack; if the channel is gone the broker redelivers, so only log it."""
    try:
        await step
    except Exception as exc:
        log.warning(
            "could not settle the message; the broker will redeliver it",
            error_type=type(exc).__name__,
        )
