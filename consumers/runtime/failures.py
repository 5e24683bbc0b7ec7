"""What a failed message carries and how long it waits: headers, rejections, pauses.

The worker (`consumers.runtime.worker`) decides a message's fate; these say what goes with it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage
from pamqp.common import FieldTable

from consumers.errors import Reject, RetryLater
from consumers.event import ROUTING_KEY
from service.shared.text import safe_text
from service.shared.timing import iso_utc

MAX_ERROR_MESSAGE = 1000
# Pause before handing a message back when the broker would not take its copy, doubling
# with each redelivery up to a minute, so a lasting broker fault never becomes a hot loop.
REQUEUE_PAUSE = 2.0
MAX_REQUEUE_PAUSE = 60.0


class NoHandler(Exception):
    """No handler of the consumer matches the message's routing key any more."""


def _now() -> str:
    return iso_utc(datetime.now(UTC))


def failure_headers(
    consumer: str,
    message: AbstractIncomingMessage,
    routing_key: str,
    attempt: int,
    failure: BaseException,
) -> FieldTable:
    """The headers that tell a retry or dead-letter copy's story."""
    now = _now()
    first = (message.headers or {}).get("x-first-failure-at")
    return {
        "x-consumer": consumer,
        ROUTING_KEY: routing_key,
        "x-error-type": safe_text(type(failure).__name__),
        "x-error-message": safe_text(describe(failure)[:MAX_ERROR_MESSAGE]),
        "x-attempts": attempt,
        "x-first-failure-at": first if isinstance(first, str) else now,
        "x-last-failure-at": now,
    }


def describe(failure: BaseException) -> str:
    try:
        return str(failure)
    except Exception:  # an exception whose __str__ raises still gets its letter
        return f"<{type(failure).__name__} with an unprintable message>"


def rejection(failure: BaseException) -> Reject | None:
    """The `Reject` in `failure`: itself, or the first one raised in a (nested) task group."""
    if isinstance(failure, Reject):
        return failure
    if isinstance(failure, BaseExceptionGroup):
        for inner in failure.exceptions:
            if (found := rejection(inner)) is not None:
                return found
    return None


def requeue_pause(message: AbstractIncomingMessage) -> float:
    count = (message.headers or {}).get("x-delivery-count")
    redeliveries = count if isinstance(count, int) and not isinstance(count, bool) else 0
    return float(min(REQUEUE_PAUSE * 2 ** min(redeliveries, 5), MAX_REQUEUE_PAUSE))


def retry_delay(delays: tuple[float, ...], attempt: int, failure: BaseException) -> float:
    """The retry delay after `attempt`; longer when the failure asks (`RetryLater`)."""
    delay = delays[attempt - 1]
    after = failure.after if isinstance(failure, RetryLater) else 0.0
    if after <= delay:
        return delay
    return next((d for d in sorted(delays) if d >= after), max(delays))
