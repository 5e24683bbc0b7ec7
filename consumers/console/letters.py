"""Reading the held queues (`.dead`, `.unrouted`, `.invalid`) for pages, and acting on one.

A queue cannot be read in place. Each sweep here takes every message the queue held
when it began, decides its fate, publishes what becomes of it (an exact copy back to
the same queue, a copy elsewhere, or nothing), waits for the confirm, and only then
acks it (`consumers.operations.transfer`). Nothing is handed back, so no delivery limit counts
it; and since a sweep goes through the whole queue, the copies that go back keep the
order the queue had. Only one sweep per queue runs at a time in a console process.
Only a page's worth of letters is kept in memory, however long the queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from consumers.event import REPLAYS, TRACEBACK, parse_resource
from consumers.operations.dead import error_of, fresh_copy, original_routing_key
from consumers.operations.transfer import exact_copy, transfer
from service.shared.text import safe_text

Fate = Literal["keep", "drop"] | tuple[Literal["move", "publish"], str]

_locks: dict[str, asyncio.Lock] = {}
TRACEBACK_SHOWN = 8192  # the worker keeps at most 4 KiB; text of a stranger's, cut


@dataclass(frozen=True, slots=True)
class Letter:
    """One held message, as a page shows it."""

    key: str  # tells this letter from others with the same message id
    message_id: str
    event_name: str
    tenant: str
    routing_key: str
    error_type: str
    error: str
    attempts: str
    failed_at: str
    reason: str  # why it was quarantined (`.invalid`)
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    replays: int = 0  # times it was replayed and failed again
    traceback: str = field(default="", repr=False)

    @property
    def failed_time(self) -> datetime | None:
        try:
            return datetime.fromisoformat(self.failed_at) if self.failed_at else None
        except ValueError:
            return None

    @property
    def text(self) -> str | None:
        return body_text(self.body)

    @property
    def pretty(self) -> str | None:
        return pretty_json(self.body)


@dataclass(frozen=True, slots=True)
class Filter:
    """Which letters a page or an action is about; empty fields match everything."""

    event_name: str = ""
    error_type: str = ""
    message_id: str = ""  # a part of the id is enough
    tenant: str = ""

    def __bool__(self) -> bool:
        return any((self.event_name, self.error_type, self.message_id, self.tenant))

    def matches(self, letter: Letter) -> bool:
        return (
            (not self.event_name or letter.event_name == self.event_name)
            and (not self.error_type or letter.error_type == self.error_type)
            and (not self.message_id or self.message_id in letter.message_id)
            and (not self.tenant or letter.tenant == self.tenant)
        )

    def query(self) -> dict[str, str]:
        """The filter as a page's query string keeps it."""
        return {
            "event": self.event_name,
            "error": self.error_type,
            "id": self.message_id,
            "tenant": self.tenant,
        }


@dataclass(slots=True)
class Listing:
    """A page of a queue, newest first, with what the filters can choose from."""

    total: int = 0
    matching: int = 0
    letters: list[Letter] = field(default_factory=list)
    event_names: Counter[str] = field(default_factory=Counter)
    error_types: Counter[str] = field(default_factory=Counter)
    tenants: Counter[str] = field(default_factory=Counter)


def letter_of(message: AbstractIncomingMessage) -> Letter:
    headers = message.headers or {}

    def header(name: str) -> str:
        value = headers.get(name)
        return "" if value is None else safe_text(str(value))[:500]

    body = message.body
    digest = hashlib.sha256()
    for part in (message.message_id or "", header("x-last-failure-at"), body):
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    event_name = header("x-event-name") or safe_text(message.type or "")
    error = error_of(message) if "x-error-type" in headers or "x-death" in headers else ""
    return Letter(
        key=digest.hexdigest()[:24],
        message_id=safe_text(message.message_id or ""),
        event_name=event_name,
        tenant=header("x-tenant-id"),
        routing_key=safe_text(original_routing_key(message)),
        error_type=header("x-error-type") or (error if error.startswith("(broker") else ""),
        error=error,
        attempts=header("x-attempts"),
        failed_at=header("x-last-failure-at") or header("x-received-at"),
        reason=header("x-invalid-reason"),
        headers=shown_headers(headers),
        body=body,
        replays=_count(headers.get(REPLAYS)),
        traceback=safe_text(str(headers.get(TRACEBACK) or ""))[:TRACEBACK_SHOWN],
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def body_text(body: bytes) -> str | None:
    """The body as text, when it is UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def pretty_json(body: bytes) -> str | None:
    """The body as indented JSON, with `Resource` decoded from its string; else None."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if isinstance(payload, dict) and (resource := parse_resource(payload.get("Resource"))):
        payload = {**payload, "Resource": resource}
    return json.dumps(payload, indent=2, ensure_ascii=False)


def shown_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """Every header as a page shows it: text, each value cut at 2,000 characters."""
    return {safe_text(str(k)): safe_text(_shown(v))[:2000] for k, v in headers.items()}


def _shown(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


async def sweep(
    channel: AbstractChannel,
    queue: str,
    decide: Callable[[Letter, AbstractIncomingMessage], Fate],
    keep_through: str = "",
) -> int:
    """Take every message `queue` holds now and do with each what `decide` says.

    `keep` puts an exact copy back: by the queue's name, or, with `keep_through`,
    through that exchange with the message's own routing key (`.unrouted`, whose
    messages are rerouted by it); `drop` acks it away; `("move", q)` sends a fresh copy
    (attempts started over) to queue `q`; `("publish", x)` an exact copy through
    exchange `x` with its routing key. `channel` must have publisher confirms.
    """

    async def forward(message: AbstractIncomingMessage) -> None:
        fate = decide(letter_of(message), message)
        if fate == "drop":
            return
        if fate == "keep":
            if keep_through:
                exchange = await channel.get_exchange(keep_through, ensure=False)
                await exchange.publish(exact_copy(message), routing_key=message.routing_key or "")
            else:
                await channel.default_exchange.publish(
                    exact_copy(message), routing_key=queue, mandatory=True
                )
            return
        kind, target = fate
        if kind == "move":
            await channel.default_exchange.publish(
                fresh_copy(message), routing_key=target, mandatory=True
            )
        else:
            exchange = await channel.get_exchange(target, ensure=False)
            await exchange.publish(exact_copy(message), routing_key=message.routing_key or "")

    async with _locks.setdefault(queue, asyncio.Lock()):
        return await transfer(channel, queue, None, forward)


async def listing(
    channel: AbstractChannel,
    queue: str,
    chosen: Filter,
    page: int,
    size: int,
    keep_through: str = "",
) -> Listing:
    """Page `page` (from 0) of `queue`'s letters matching `chosen`, newest first."""
    result = Listing()
    # The newest `(page + 1) * size` matches: all a page needs, however long the queue.
    newest: deque[Letter] = deque(maxlen=(page + 1) * size)

    def look(letter: Letter, _: AbstractIncomingMessage) -> Fate:
        result.total += 1
        result.event_names[letter.event_name] += 1
        result.error_types[letter.error_type] += 1
        result.tenants[letter.tenant] += 1
        if chosen.matches(letter):
            result.matching += 1
            newest.append(letter)
        return "keep"

    await sweep(channel, queue, look, keep_through)
    ordered = list(reversed(newest))
    result.letters = ordered[page * size : (page + 1) * size]
    return result


async def find(channel: AbstractChannel, queue: str, key: str) -> Letter | None:
    """The letter `key` of `queue`, or None; the queue keeps it."""
    found: list[Letter] = []

    def look(letter: Letter, _: AbstractIncomingMessage) -> Fate:
        if letter.key == key and not found:
            found.append(letter)
        return "keep"

    await sweep(channel, queue, look)
    return found[0] if found else None


async def act(
    channel: AbstractChannel,
    queue: str,
    fate: Fate,
    *,
    key: str | None = None,
    chosen: Filter | None = None,
) -> int:
    """Give `fate` to letter `key`, or to every letter `chosen` matches; keep the rest.

    Returns how many letters got `fate`.
    """
    done = 0

    def decide(letter: Letter, _: AbstractIncomingMessage) -> Fate:
        nonlocal done
        if key is not None:
            hit = letter.key == key and done == 0
        else:
            hit = chosen is None or chosen.matches(letter)
        if hit:
            done += 1
            return fate
        return "keep"

    await sweep(channel, queue, decide)
    return done


async def oldest_failure(channel: AbstractChannel, queue: str) -> datetime | None:
    """The earliest last failure among `queue`'s letters (a sweep: every letter is read)."""
    oldest: datetime | None = None

    def look(letter: Letter, _: AbstractIncomingMessage) -> Fate:
        nonlocal oldest
        failed = letter.failed_time
        if failed is not None and (oldest is None or failed < oldest):
            oldest = failed
        return "keep"

    await sweep(channel, queue, look)
    return oldest


def download_name(letter: Letter) -> str:
    """A file name for a letter's raw body."""
    return f"{letter.key}.bin"
