"""The History page: stored events, found as `history search` finds them, and replayed.

It needs HISTORY_DATABASE_URL; without it the page says so and the rest of the console
works as before. The pool on the history database is opened at the first look (`Archive`)
and closed when the console stops. Filters are read by the functions the command line
uses (`consumers.history.query`), so `2h` or `placement.#` mean here what they mean
there. "Replay to" sends the filtered events that a consumer's bindings match to its
queue, as `history replay` does (`consumers.history.replay`), and says how many went.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
import aiormq
import asyncpg
import structlog
from aiohttp import web

from consumers.console.context import CONTEXT, base, checked_form, context_of, page_number
from consumers.console.letters import body_text, pretty_json, shown_headers
from consumers.console.settings import ConsoleSettings
from consumers.dedupe import UNAVAILABLE
from consumers.history.query import Filter, count, parse_event, parse_time, parse_where, search
from consumers.history.replay import Progress, replay
from consumers.history.settings import HistorySettings
from consumers.history.store import HistoryStore, HistoryUnavailable, open_pool
from consumers.operations.registry import known_consumers
from service.shared.errors import SettingsError

log = structlog.get_logger("consumers.console")

FIELDS = ("since", "until", "event", "tenant", "id", "where")
LONGEST = 2000  # characters kept of a filter as typed
NOT_CONFIGURED = (
    "The event history is not configured: set HISTORY_DATABASE_URL (or "
    "HISTORY_DATABASE_URL_FILE) to the PostgreSQL database the history consumer writes "
    "to, and start the console again."
)
# What the history database does when it cannot be used (a filter it refuses aside).
TROUBLE = (HistoryUnavailable, *UNAVAILABLE, asyncpg.PostgresError)


class Archive:
    """The history database as the console reads it: one pool, opened at the first look."""

    def __init__(self, settings: HistorySettings, scope: str) -> None:
        self.settings = settings
        self._scope = scope
        self._store: HistoryStore | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Archive({self.settings.display!r})"

    async def store(self) -> HistoryStore:
        """The store, its tables made if need be; raise what `TROUBLE` names if it cannot be."""
        async with self._lock:
            if self._store is None:
                pool = await open_pool(self.settings.database_url.value, self.settings.display)
                store = HistoryStore(pool, self._scope)
                try:
                    await store.create()
                except BaseException:
                    await store.close()
                    raise
                self._store = store
            return self._store

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()


def typed_from(values: Mapping[str, Any]) -> dict[str, str]:
    """The filters as the operator typed them, to show them again and to pass them on."""
    return {name: str(values.get(name, "")).strip()[:LONGEST] for name in FIELDS}


def filter_of(typed: dict[str, str]) -> Filter:
    """What the typed filters select; `SettingsError` names the one that is wrong."""
    return Filter(
        since=_moment("since", typed["since"]),
        until=_moment("until", typed["until"]),
        event=parse_event(typed["event"]) if typed["event"] else None,
        tenant=_tenant(typed["tenant"]) if typed["tenant"] else None,
        message_id=typed["id"] or None,
        where=parse_where(typed["where"]) if typed["where"] else None,
    )


def _moment(name: str, text: str) -> datetime | None:
    if not text:
        return None
    try:
        return parse_time(name, text).astimezone(UTC)
    except OverflowError:
        raise SettingsError(name, f"is out of range, got {text!r}") from None


def _tenant(text: str) -> int:
    try:
        tenant = int(text)
    except ValueError:
        raise SettingsError("tenant", f"must be a whole number, got {text!r}") from None
    if not -(2**63) <= tenant < 2**63:
        raise SettingsError("tenant", f"is out of range, got {text!r}")
    return tenant


def _said(exc: SettingsError) -> str:
    """The problem as the page says it: `event: ...`, not the command line's `--event: ...`."""
    return str(exc).removeprefix("--")


def _query(typed: dict[str, str]) -> str:
    """The filters as a query string, ending in `&` when there are any (links add more)."""
    kept = urlencode({name: value for name, value in typed.items() if value})
    return kept + "&" if kept else ""


def _refused(exc: asyncpg.DataError) -> str:
    """A filter the database will not take (a NUL character, say), as the page says it."""
    return f"the history database cannot search for that: {exc}"


def _archive(request: web.Request) -> Archive | None:
    archive: Archive | None = context_of(request)["history"]
    return archive


def _unusable(request: web.Request, archive: Archive, exc: BaseException) -> str:
    log.warning("console: the history database failed", error=type(exc).__name__, path=request.path)
    if isinstance(exc, HistoryUnavailable):
        return f"The event history cannot be read: {exc}. Try again."
    return (
        f"The event history at {archive.settings.display} cannot be read "
        f"({type(exc).__name__}). Try again."
    )


def _history_page(request: web.Request, status: int = 200, **values: Any) -> web.Response:
    shown = {
        "configured": True,
        "typed": dict.fromkeys(FIELDS, ""),
        "problem": None,
        "error": None,
        "entries": [],
        "total": 0,
        "page": 0,
        "pages": 1,
        "query": "",
        "consumers": [],
        **values,
    }
    return aiohttp_jinja2.render_template(
        "history.html", request, base(request, **shown), status=status
    )


async def history_page(request: web.Request) -> web.Response:
    archive = _archive(request)
    if archive is None:
        return _history_page(request, configured=False, problem=NOT_CONFIGURED)
    ctx = context_of(request)
    typed = typed_from(request.query)
    page, size = page_number(request), ctx["settings"].page_size
    try:
        chosen = filter_of(typed)
        store = await archive.store()
        total = await count(store, chosen)
        entries = await search(store, chosen, size, page * size)
    except SettingsError as exc:
        return _history_page(request, 400, typed=typed, error=_said(exc))
    except asyncpg.DataError as exc:
        return _history_page(request, 400, typed=typed, error=_refused(exc))
    except TROUBLE as exc:
        return _history_page(request, 503, typed=typed, problem=_unusable(request, archive, exc))
    consumers = await known_consumers(await ctx["broker"].connection(), ctx["names"])
    return _history_page(
        request,
        typed=typed,
        entries=entries,
        total=total,
        page=page,
        pages=max(1, -(-total // size)),
        query=_query(typed),
        consumers=consumers,
    )


@aiohttp_jinja2.template("event.html")
async def event_page(request: web.Request) -> dict[str, Any]:
    archive = _archive(request)
    if archive is None:
        raise web.HTTPNotFound(text=NOT_CONFIGURED + "\n")
    message_id = request.match_info["message_id"]
    if len(message_id) > LONGEST or "\0" in message_id:
        raise web.HTTPNotFound(text="no such event in the history\n")
    try:
        found = await search(await archive.store(), Filter(message_id=message_id), 1)
    except TROUBLE as exc:
        raise web.HTTPServiceUnavailable(text=_unusable(request, archive, exc) + "\n") from None
    if not found:
        raise web.HTTPNotFound(text="no such event in the history\n")
    entry = found[0]
    return base(
        request,
        entry=entry,
        pretty=pretty_json(entry.body),
        text=body_text(entry.body),
        headers=shown_headers(entry.headers),
        again=urlencode({"id": entry.message_id}),
    )


async def replay_to(request: web.Request) -> web.Response:
    form = await checked_form(request)
    archive = _archive(request)
    if archive is None:
        raise web.HTTPNotFound(text=NOT_CONFIGURED + "\n")
    typed = typed_from(form)
    try:
        chosen = filter_of(typed)
    except SettingsError as exc:
        raise web.HTTPBadRequest(text=_said(exc) + "\n") from None
    ctx = context_of(request)
    names, consumer = ctx["names"], str(form.get("consumer", ""))
    connection = await ctx["broker"].connection()
    known = await known_consumers(connection, names)
    if consumer not in known:
        raise web.HTTPBadRequest(
            text=f"no consumer {consumer[:100]!r} to replay to under {names.prefix!r};"
            f" known consumers: {', '.join(known) or 'none'}\n"
        )
    progress = Progress()
    try:
        await replay(connection, names, consumer, await archive.store(), chosen, progress)
    except asyncpg.DataError as exc:
        raise web.HTTPBadRequest(text=_refused(exc) + "\n") from None
    except (*TROUBLE, aiormq.exceptions.AMQPError, RuntimeError) as exc:
        log.warning(
            "console: a replay from the history stopped",
            consumer=consumer,
            replayed=progress.replayed,
            error=type(exc).__name__,
        )
        resume = f"; to go on, replay since {progress.last.isoformat()}" if progress.last else ""
        raise web.HTTPServiceUnavailable(
            text=f"The replay stopped ({type(exc).__name__}): replayed {progress.replayed}"
            f" event(s) to {consumer} (each confirmed), {progress.skipped} skipped{resume}.\n"
        ) from None
    log.info(
        "console replayed from the history",
        consumer=consumer,
        replayed=progress.replayed,
        skipped=progress.skipped,
    )
    done = urlencode(
        {"done": "history", "n": progress.replayed, "skipped": progress.skipped, "to": consumer}
    )
    raise web.HTTPSeeOther(f"/history?{_query(typed)}{done}")


def register(app: web.Application, settings: ConsoleSettings) -> None:
    """Add the History pages to the console `app`, with the archive they read."""
    history = settings.history
    archive = None if history is None else Archive(history, settings.worker.scope)
    app[CONTEXT]["history"] = archive

    async def lifetime(_: web.Application) -> AsyncIterator[None]:
        yield
        if archive is not None:
            await archive.close()

    app.cleanup_ctx.append(lifetime)
    app.router.add_get("/history", history_page)
    app.router.add_post("/history/replay", replay_to)
    app.router.add_get("/history/{message_id:.+}", event_page)
