"""What a failed message carries and how long it waits: headers, rejections, pauses.

The worker (`consumers.runtime.worker`) decides a message's fate; these say what goes with it.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage
from pamqp.common import FieldTable

from consumers.errors import Reject, RetryLater
from consumers.event import ROUTING_KEY, TRACEBACK
from service.observability.redaction import redact
from service.shared.text import safe_text
from service.shared.timing import iso_utc

MAX_ERROR_MESSAGE = 1000
MAX_TRACEBACK = 4096  # bytes of UTF-8 in x-error-traceback
# Bytes kept for the line that says how many frames were left out.
_LEFT_OUT_ROOM = 64
_FRAME = '  File "'
# More frames than fit (one takes 23 bytes at least): formatting stops there, so a
# failure thousands of frames deep costs no more than one a few hundred deep.
_MOST_FRAMES = MAX_TRACEBACK // 20
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
        "x-error-message": safe_text(redact(describe(failure))[:MAX_ERROR_MESSAGE]),
        TRACEBACK: traceback_text(failure),
        "x-attempts": attempt,
        "x-first-failure-at": first if isinstance(first, str) else now,
        "x-last-failure-at": now,
    }


def describe(failure: BaseException) -> str:
    try:
        return str(failure)
    except Exception:  # an exception whose __str__ raises still gets its letter
        return f"<{type(failure).__name__} with an unprintable message>"


def traceback_text(failure: BaseException, limit: int = MAX_TRACEBACK) -> str:
    """`failure`'s traceback as Python prints it, in at most `limit` bytes of UTF-8.

    Every secret a log line would mask is masked here too. An exception group shows its
    own frames, then its first sub-exception's (down to one that is no group), so a
    task group's failure ends with the exception a task raised. When it does not fit,
    the outermost frames are left out, and a first line says how many: the innermost
    frames and the exception line are what tell a failure apart.
    """
    chunks, unshown = _traceback_chunks(failure)
    text = _cut([safe_text(redact(chunk)) for chunk in chunks], limit, unshown)
    return text.removesuffix("\n")


def _traceback_chunks(failure: BaseException) -> tuple[list[str], int]:
    """The traceback in pieces as `traceback` formats them, one per frame; frames not in it."""
    if not isinstance(failure, BaseExceptionGroup) or not failure.exceptions:
        chunks = traceback.format_exception(failure, limit=-_MOST_FRAMES)
        return chunks, sum(_beyond(exception) for exception in _chain(failure))
    inner, unshown = _traceback_chunks(failure.exceptions[0])
    chunks = [
        "Exception Group Traceback (most recent call last):\n",
        *traceback.format_tb(failure.__traceback__, limit=-_MOST_FRAMES),
        *traceback.format_exception_only(failure),
        f"\nSub-exception 1 of {len(failure.exceptions)}:\n\n",
        *inner,
    ]
    return chunks, unshown + _beyond(failure)


def _beyond(failure: BaseException) -> int:
    """How many frames of `failure`'s own traceback are beyond `_MOST_FRAMES`."""
    return max(0, sum(1 for _ in traceback.walk_tb(failure.__traceback__)) - _MOST_FRAMES)


def _chain(failure: BaseException) -> Iterator[BaseException]:
    """`failure`, then what Python prints before it: its cause or context, and theirs."""
    seen: set[int] = set()
    current: BaseException | None = failure
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if current.__cause__ is not None:
            current = current.__cause__
        else:
            current = None if current.__suppress_context__ else current.__context__


def _cut(chunks: list[str], limit: int, unshown: int) -> str:
    """`chunks` joined; over `limit` bytes, their first frames give way to a line saying so.

    `unshown` frames, left out before, are counted in that line.
    """
    if not unshown and sum(len(chunk.encode()) for chunk in chunks) <= limit:
        return "".join(chunks)
    frames = [i for i, chunk in enumerate(chunks) if chunk.startswith(_FRAME)]
    last = frames[-1] if frames else -1
    # The exception line (and its notes): kept whole, unless longer than half the room.
    ending = _clip("".join(chunks[last + 1 :]), (limit - _LEFT_OUT_ROOM) // 2)
    room = limit - _LEFT_OUT_ROOM - len(ending.encode())
    first = last + 1
    while first > 0 and (size := len(chunks[first - 1].encode())) <= room:
        room -= size
        first -= 1
    left_out = unshown + sum(1 for chunk in chunks[:first] if chunk.startswith(_FRAME))
    if not left_out and first <= 1:  # every frame fits (the message was cut): no more to say
        return "".join(chunks[: last + 1]) + ending
    if first < len(chunks) and chunks[first].endswith("(most recent call last):\n"):
        first += 1  # the line that says what was left out takes its place
    plural = "" if left_out == 1 else "s"
    head = f"... ({left_out} earlier frame{plural} left out)\n"
    return head + "".join(chunks[first : last + 1]) + ending


def _clip(text: str, limit: int) -> str:
    """`text` if it fits in `limit` bytes; else its start, marked as cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 5].decode("utf-8", "ignore") + " ...\n"


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
