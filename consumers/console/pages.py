"""The console's pages and actions, as an aiohttp application rendered with Jinja2."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
import aiormq
import jinja2
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiohttp import web

from consumers.console import history, letters
from consumers.console.activity import Activity
from consumers.console.context import CONTEXT, NAME, base, checked_form, context_of, page_number
from consumers.console.letters import Filter, Letter
from consumers.console.management import Management
from consumers.console.overview import DeadAges, Overview, overview
from consumers.console.receivers import Receivers
from consumers.console.security import Guard, Handler
from consumers.console.settings import ConsoleSettings
from consumers.console.times import age, when, when_unix
from consumers.operations.reroute import reroute
from consumers.topology import ConsumerQueues
from service.shared import brokers
from service.shared.bus import BusNames
from service.shared.supervise import ended_within, keep_running, stop_insisting

log = structlog.get_logger("consumers.console")

HERE = Path(__file__).parent
_KEY = re.compile(r"[0-9a-f]{24}")
ICON = "image/svg+xml"
# Without a link a close waits for an answer that never comes.
CLOSE_WITHIN = 5.0


class Broker:
    """The console's AMQP connection, made again when lost."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: AbstractConnection | None = None
        self._lost = True
        self._lock = asyncio.Lock()

    async def connection(self) -> AbstractConnection:
        async with self._lock:
            # aio-pika marks a connection closed only when this side closes it; one the
            # broker or the network ended says so through its close callbacks alone.
            if self._connection is None or self._lost or self._connection.is_closed:
                if self._connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._connection.close(), 2)
                connection = await brokers.connect(self._url, within=5)
                self._connection, self._lost = connection, False
                connection.close_callbacks.add(lambda *_: self._ended(connection))
            return self._connection

    def _ended(self, connection: AbstractConnection) -> None:
        if connection is self._connection:
            self._lost = True

    async def channel(self) -> AbstractChannel:
        """A channel with publisher confirms, for one sweep; the caller closes it."""
        connection = await self.connection()
        return await connection.channel(publisher_confirms=True, on_return_raises=True)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


def _consumer(request: web.Request) -> ConsumerQueues:
    name = request.match_info["name"]
    if not NAME.fullmatch(name):
        raise web.HTTPNotFound(text="no such consumer\n")
    return ConsumerQueues(context_of(request)["names"].prefix, name)


def _key(request: web.Request) -> str:
    key = request.match_info["key"]
    if not _KEY.fullmatch(key):
        raise web.HTTPNotFound(text="no such letter\n")
    return key


def _filter(values: Any) -> Filter:
    def value(name: str) -> str:
        return str(values.get(name, "")).strip()[:200]

    return Filter(value("event"), value("error"), value("id"), value("tenant"))


async def _swept(
    request: web.Request,
    queue: str,
    chosen: Filter,
    keep_through: str = "",
    missing: web.HTTPException | None = None,
) -> dict[str, Any]:
    """A page of `queue`; a queue not there is empty, or `missing` when that is an error."""
    ctx = context_of(request)
    page, size = page_number(request), ctx["settings"].page_size
    channel = await ctx["broker"].channel()
    try:
        listing = await letters.listing(channel, queue, chosen, page, size, keep_through)
    except aiormq.exceptions.ChannelNotFoundEntity:
        if missing is not None:
            raise missing from None
        listing = letters.Listing()  # not declared yet: nothing was ever held there
    finally:
        if not channel.is_closed:
            await channel.close()
    pages = max(1, -(-listing.matching // size))
    return {"listing": listing, "page": page, "pages": pages, "chosen": chosen}


async def _found(request: web.Request, queue: str) -> Letter:
    channel = await context_of(request)["broker"].channel()
    try:
        letter = await letters.find(channel, queue, _key(request))
    finally:
        await channel.close()
    if letter is None:
        raise web.HTTPNotFound(text="that letter is no longer there\n")
    return letter


async def _overview(request: web.Request) -> Overview:
    ctx = context_of(request)
    connection = await ctx["broker"].connection()
    rates = ctx["activity"].rates()
    return await overview(ctx["management"], connection, ctx["names"], rates, ctx["ages"])


@aiohttp_jinja2.template("overview.html")
async def overview_page(request: web.Request) -> dict[str, Any]:
    ctx = context_of(request)
    shown = await _overview(request)
    return base(request, overview=shown, reporting=ctx["activity"].following)


async def overview_json(request: web.Request) -> web.Response:
    shown = await _overview(request)
    receivers = context_of(request)["receivers"]
    return web.json_response(
        {**shown.as_json(), "troubled": [state.url for state in receivers.troubled]}
    )


@aiohttp_jinja2.template("dead.html")
async def dead_page(request: web.Request) -> dict[str, Any]:
    queues = _consumer(request)
    chosen = _filter(request.query)
    return base(
        request,
        consumer=queues.consumer,
        queue=queues.dead,
        **await _swept(request, queues.dead, chosen, missing=_no_consumer(queues)),
    )


def _no_consumer(queues: ConsumerQueues) -> web.HTTPNotFound:
    return web.HTTPNotFound(
        text=f"no consumer {queues.consumer} under prefix {queues.prefix}: it has no queues\n"
    )


@aiohttp_jinja2.template("letter.html")
async def letter_page(request: web.Request) -> dict[str, Any]:
    queues = _consumer(request)
    letter = await _found(request, queues.dead)
    return base(request, consumer=queues.consumer, letter=letter, held="dead")


@aiohttp_jinja2.template("discard.html")
async def discard_page(request: web.Request) -> dict[str, Any]:
    queues = _consumer(request)
    letter = await _found(request, queues.dead)
    return base(request, consumer=queues.consumer, letter=letter)


async def _act(request: web.Request, queue: str, fate: letters.Fate, form: Any) -> int:
    channel = await context_of(request)["broker"].channel()
    try:
        scope = str(form.get("scope", "one"))
        if scope == "one":
            key = str(form.get("key", ""))
            if not _KEY.fullmatch(key):
                raise web.HTTPBadRequest(text="which letter? (key missing)\n")
            return await letters.act(channel, queue, fate, key=key)
        chosen = _filter(form) if scope == "filtered" else None
        return await letters.act(channel, queue, fate, chosen=chosen)
    finally:
        await channel.close()


async def replay(request: web.Request) -> web.Response:
    queues = _consumer(request)
    form = await checked_form(request)
    count = await _act(request, queues.dead, ("move", queues.main), form)
    log.info("console replayed dead letters", consumer=queues.consumer, count=count)
    done = "replayed" if count or form.get("scope") != "one" else "gone"
    # Back to the page as the operator had it: the same filter.
    kept = {k: v for k, v in _filter(form).query().items() if v}
    query = urlencode({**kept, "done": done, "n": count})
    raise web.HTTPSeeOther(f"/consumers/{queues.consumer}?{query}")


async def discard(request: web.Request) -> web.Response:
    queues = _consumer(request)
    form = await checked_form(request)
    if form.get("confirm") != "discard":
        raise web.HTTPBadRequest(text="a discard must be confirmed\n")
    count = await _act(request, queues.dead, "drop", {**form, "scope": "one"})
    log.warning("console discarded a dead letter", consumer=queues.consumer, count=count)
    raise web.HTTPSeeOther(
        f"/consumers/{queues.consumer}?done={'discarded' if count else 'gone'}&n={count}"
    )


@aiohttp_jinja2.template("unrouted.html")
async def unrouted_page(request: web.Request) -> dict[str, Any]:
    names = context_of(request)["names"]
    # Kept through the unrouted exchange: a reroute needs each event's own routing key.
    swept = await _swept(request, names.unrouted, Filter(), keep_through=names.unrouted)
    return base(request, queue=names.unrouted, **swept)


async def reroute_all(request: web.Request) -> web.Response:
    await checked_form(request)
    channel = await context_of(request)["broker"].channel()
    try:
        result = await reroute(channel, context_of(request)["names"])
    finally:
        await channel.close()
    log.info("console rerouted", moved=result.moved, still_unrouted=result.still_unrouted)
    raise web.HTTPSeeOther(f"/unrouted?done=rerouted&n={result.moved}")


@aiohttp_jinja2.template("invalid.html")
async def invalid_page(request: web.Request) -> dict[str, Any]:
    names = context_of(request)["names"]
    return base(request, queue=names.invalid, **await _swept(request, names.invalid, Filter()))


@aiohttp_jinja2.template("letter.html")
async def invalid_letter(request: web.Request) -> dict[str, Any]:
    letter = await _found(request, context_of(request)["names"].invalid)
    return base(request, consumer=None, letter=letter, held="invalid")


async def invalid_body(request: web.Request) -> web.Response:
    letter = await _found(request, context_of(request)["names"].invalid)
    return web.Response(
        body=letter.body,
        content_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{letters.download_name(letter)}"'},
    )


@web.middleware
async def broker_trouble(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A broker that cannot be reached is a page that says so (503), not a traceback."""
    try:
        return await handler(request)
    except (OSError, TimeoutError, aiormq.exceptions.AMQPError, RuntimeError) as exc:
        shown = brokers.display(context_of(request)["settings"].worker.amqp_url.value)
        log.warning("console: the broker failed", error=type(exc).__name__, path=request.path)
        return web.Response(
            status=503,
            text=f"The broker cannot be reached at {shown} ({type(exc).__name__}). Try again.\n",
        )


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CONTEXT]
    # The first answers before the first page, bounded: a page never waits on a receiver.
    await ctx["receivers"].poll()
    tasks = [
        keep_running("console-receivers", ctx["receivers"].poll_forever),
        keep_running("console-activity", ctx["activity"].follow),
    ]
    yield
    for task in tasks:
        await stop_insisting(task)
    if not await ended_within(ctx["broker"].close(), CLOSE_WITHIN):
        log.warning("console: could not close the broker connection in time", within=CLOSE_WITHIN)


async def favicon(request: web.Request) -> web.FileResponse:
    return web.FileResponse(HERE / "static" / "favicon.svg", headers={"Content-Type": ICON})


def build(settings: ConsoleSettings) -> web.Application:
    """The console application for `settings`."""
    guard = Guard(settings.user, settings.password.value)
    app = web.Application(middlewares=[guard.middleware, broker_trouble], client_max_size=64 * 1024)
    broker = Broker(settings.worker.amqp_url.value)
    names = BusNames(settings.worker.bus_prefix)
    app[CONTEXT] = {
        "settings": settings,
        "guard": guard,
        "names": names,
        "broker": broker,
        "management": Management(settings.management_url.value, settings.worker.vhost),
        "receivers": Receivers(settings.receivers),
        "activity": Activity(broker.connection, names),
        "ages": DeadAges(),
    }
    templates = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    templates.filters.update(when=when, age=age, when_unix=when_unix)
    app.cleanup_ctx.append(_lifetime)
    app.router.add_get("/", overview_page)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/overview.json", overview_json)
    app.router.add_get("/consumers/{name}", dead_page)
    app.router.add_get("/consumers/{name}/letters/{key}", letter_page)
    app.router.add_get("/consumers/{name}/letters/{key}/discard", discard_page)
    app.router.add_post("/consumers/{name}/replay", replay)
    app.router.add_post("/consumers/{name}/discard", discard)
    app.router.add_get("/unrouted", unrouted_page)
    app.router.add_post("/unrouted/reroute", reroute_all)
    app.router.add_get("/invalid", invalid_page)
    app.router.add_get("/invalid/{key}", invalid_letter)
    app.router.add_get("/invalid/{key}/body", invalid_body)
    history.register(app, settings)
    app.router.add_static("/static", HERE / "static", append_version=True)
    return app
