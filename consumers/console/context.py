"""What every page of the console takes from its application, whichever module serves it.

`CONTEXT` holds the settings, the guard, the bus names and the connections `build`
made; `base` gives the values every template needs, `checked_form` a POST's form once
its CSRF token is checked, and `page_number` which page of a listing is asked for.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger("consumers.console")

CONTEXT = web.AppKey("console", dict)
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
NOTICES = {
    "replayed": "{n} letter(s) sent back to the consumer's queue.",
    "discarded": "{n} letter(s) discarded.",
    "rerouted": "{n} event(s) sent through the events exchange again.",
    "gone": "That letter is no longer there: replayed or discarded meanwhile.",
    "history": "Replayed {n} event(s) to {to}, {skipped} skipped (not bound).",
}


def context_of(request: web.Request) -> dict[str, Any]:
    return request.app[CONTEXT]


def page_number(request: web.Request) -> int:
    try:
        return max(0, min(int(request.query.get("page", "0")), 10_000))
    except ValueError:
        return 0


def _notice(query: Any) -> str | None:
    notice = NOTICES.get(query.get("done", ""))
    if notice is None:
        return None

    def number(key: str) -> str:
        value = str(query.get(key, ""))
        return value if value.isdigit() else "?"

    to = str(query.get("to", ""))
    to = to if NAME.fullmatch(to) else "?"
    return notice.format(n=number("n"), skipped=number("skipped"), to=to)


def base(request: web.Request, **values: Any) -> dict[str, Any]:
    ctx = context_of(request)
    return {
        "prefix": ctx["names"].prefix,
        "csrf": ctx["guard"].token(),
        "notice": _notice(request.query),
        "user": ctx["settings"].user,
        "receivers": ctx["receivers"].states,
        "troubled": ctx["receivers"].troubled,
        **values,
    }


async def checked_form(request: web.Request) -> Any:
    form = await request.post()
    if not context_of(request)["guard"].csrf_ok(request, form.get("csrf")):
        log.warning("console POST refused: bad CSRF token or origin", path=request.path)
        raise web.HTTPForbidden(text="CSRF token missing or wrong, or another origin\n")
    return form
