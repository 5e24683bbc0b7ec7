"""Which events a search or a replay means: times, event patterns, tenant, id, payload.

`T` is ISO 8601 (UTC when it names no offset) or relative to now: `90m`, `2h`, `3d`
(also `s` and `w`). `EVENT` is an event name or a topic pattern, normalized as bindings
are; it matches the routing keys the history has seen, so the query stays on an index.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from consumers.errors import RegistrationError
from consumers.event import parse_resource
from consumers.history.store import Entry, HistoryStore, entry_of
from consumers.patterns import matches, normalize_pattern
from service.shared.errors import SettingsError

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_COLUMNS = (
    "message_id, received_at, event, routing_key, tenant_id, delivery_id, auth, headers, "
    "body, payload"
)
PAGE = 1000


def parse_time(option: str, text: str, now: datetime | None = None) -> datetime:
    """`text` as a moment; raise `SettingsError` naming `option` when it is neither form."""
    try:
        found = _RELATIVE.match(text)
        if found:
            seconds = float(found.group(1)) * _UNITS[found.group(2)]
            return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except ValueError:
        raise SettingsError(
            option,
            f"must be ISO 8601 (2026-12-01T08:00, UTC when no offset) or relative "
            f"(90m, 2h, 3d), got {text!r}",
        ) from None
    except OverflowError:
        raise SettingsError(option, f"is out of range, got {text!r}") from None


def parse_where(text: str) -> dict[str, Any]:
    """`--where`: a JSON object the payload must contain; a `Resource` string is decoded."""
    try:
        where = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise SettingsError("--where", f"is not JSON: {exc}") from None
    if not isinstance(where, dict):
        raise SettingsError("--where", f"must be a JSON object, got {text!r}")
    resource = where.get("Resource")
    if isinstance(resource, str) and (decoded := parse_resource(resource)) is not None:
        where["Resource"] = decoded
    return where


def parse_event(text: str) -> str:
    try:
        return normalize_pattern(text)
    except RegistrationError as exc:
        raise SettingsError("--event", str(exc)) from None


@dataclass(frozen=True)
class Filter:
    """The filters of `history search` and `history replay`; unset ones match everything."""

    since: datetime | None = None
    until: datetime | None = None
    event: str | None = None
    tenant: int | None = None
    message_id: str | None = None
    where: dict[str, Any] | None = field(default=None, hash=False)

    async def clause(self, store: HistoryStore) -> tuple[str, list[Any]]:
        """The SQL condition and its arguments ($1 is the scope)."""
        parts, args = ["scope = $1"], [store.scope]

        def add(sql: str, value: Any) -> None:
            args.append(value)
            parts.append(sql.format(f"${len(args)}"))

        if self.since is not None:
            add("received_at >= {}", self.since)
        if self.until is not None:
            add("received_at < {}", self.until)
        if self.event is not None:
            keys = [k for k in await store.routing_keys() if matches(self.event, k)]
            add("routing_key = ANY({}::text[])", keys)
        if self.tenant is not None:
            add("tenant_id = {}", self.tenant)
        if self.message_id is not None:
            add("message_id = {}", self.message_id)
        if self.where is not None:
            add("payload @> {}::jsonb", orjson.dumps(self.where).decode())
        return " AND ".join(parts), args


async def search(store: HistoryStore, chosen: Filter, limit: int, offset: int = 0) -> list[Entry]:
    """Matching events, newest first."""
    where, args = await chosen.clause(store)
    sql = (
        f"SELECT {_COLUMNS} FROM relay_history WHERE {where} "  # noqa: S608
        f"ORDER BY received_at DESC, message_id DESC LIMIT {int(limit)} OFFSET {int(offset)}"
    )
    return [entry_of(row) for row in await store.pool.fetch(sql, *args)]


async def count(store: HistoryStore, chosen: Filter) -> int:
    where, args = await chosen.clause(store)
    sql = f"SELECT count(*) FROM relay_history WHERE {where}"  # noqa: S608
    return int(await store.pool.fetchval(sql, *args))


async def oldest_first(store: HistoryStore, chosen: Filter) -> AsyncIterator[Sequence[Entry]]:
    """Every matching event, oldest first, a page at a time (keyset, not OFFSET)."""
    where, args = await chosen.clause(store)
    after: tuple[datetime, str] | None = None
    while True:
        page_args = list(args)
        condition = where
        if after is not None:
            page_args.extend(after)
            n = len(page_args)
            condition += f" AND (received_at, message_id) > (${n - 1}, ${n})"
        sql = (
            f"SELECT {_COLUMNS} FROM relay_history WHERE {condition} "  # noqa: S608
            f"ORDER BY received_at, message_id LIMIT {PAGE}"
        )
        rows = await store.pool.fetch(sql, *page_args)
        if not rows:
            return
        entries = [entry_of(row) for row in rows]
        yield entries
        last = entries[-1]
        after = (last.received_at, last.message_id)
