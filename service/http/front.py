"""The front door: a delivery goes straight to the webhook's handler, past the router.

On every request aiohttp's application resolves the route, freezes its match and
looks for middlewares; for the one route that carries the load that was about 7 µs of
a delivery's CPU (see the performance page). The front door sends a `POST` whose
target is exactly the webhook path, without `Expect`, to the handler the application
routes there. Anything else (another path or method, a query string, an absolute
target, `Expect: 100-continue`) goes to the application as before, so every answer is
the one the router would give.
"""

from __future__ import annotations

from collections.abc import Awaitable

from aiohttp import hdrs, web

from service.http.app import WEBHOOK, WEBHOOK_PATH


def open_front_door(app: web.Application, server: web.Server) -> bool:
    """Route the webhook's plain POSTs around the router of `server`, which serves `app`.

    Only for an app with no middlewares, no `on_response_prepare` handlers and no
    sub-applications, whose own would be skipped. Returns whether the door was opened.
    """
    webhook = app.get(WEBHOOK)
    nested = any(isinstance(r, web.PrefixedSubAppResource) for r in app.router.resources())
    if webhook is None or nested or app.middlewares or app.on_response_prepare:
        return False
    routed = server.request_handler

    # Not a coroutine: the handler's own coroutine is what the server awaits, with no
    # frame of ours for each of its resumptions to pass through.
    def front(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        if (
            request.raw_path == WEBHOOK_PATH
            and request.method == hdrs.METH_POST
            and isinstance(request, web.Request)
            and hdrs.EXPECT not in request.headers
        ):
            return webhook(request)
        return routed(request)

    server.request_handler = front
    return True
