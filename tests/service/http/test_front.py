"""The front door: plain webhook POSTs skip the router, and every answer stays the router's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from service.http.app import WEBHOOK, WEBHOOK_PATH, create_app, routable
from service.http.front import open_front_door
from tests.fakes import MemoryPublisher
from tests.receivers import SpawnReceiver
from tests.support import API_KEYS, fixture_bodies, receiver_settings

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
BODY = fixture_bodies()["talent_created"]
KEY = {"X-api-key": API_KEYS[0]}


def _server(client: Client) -> web.Server:
    runner = client.server.runner
    assert runner is not None
    assert runner.server is not None
    return runner.server


def _answer(text: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=text)

    return handler


async def test_a_plain_post_goes_straight_to_the_webhook(aiohttp_client: MakeClient) -> None:
    app = web.Application()
    app.router.add_post(WEBHOOK_PATH, _answer("routed"))
    app.router.add_get("/other", _answer("other"))
    app[WEBHOOK] = _answer("direct")
    client = await aiohttp_client(app)
    assert open_front_door(app, _server(client))

    assert await (await client.post(WEBHOOK_PATH, data=b"{}")).text() == "direct"
    # Whatever the door does not recognise exactly is the router's to answer.
    assert await (await client.post(f"{WEBHOOK_PATH}?x=1", data=b"{}")).text() == "routed"
    expecting = await client.post(WEBHOOK_PATH, data=b"{}", expect100=True)
    assert await expecting.text() == "routed"
    assert await (await client.get("/other")).text() == "other"
    assert (await client.get(WEBHOOK_PATH)).status == 405
    assert (await client.post(f"{WEBHOOK_PATH}/", data=b"{}")).status == 404


async def test_the_door_stays_shut_for_an_app_with_middlewares(
    aiohttp_client: MakeClient,
) -> None:
    seen: list[str] = []

    @web.middleware
    async def watch(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(request.path)
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[watch])
    app.router.add_post(WEBHOOK_PATH, _answer("routed"))
    app[WEBHOOK] = _answer("direct")
    client = await aiohttp_client(app)
    assert not open_front_door(app, _server(client))

    assert await (await client.post(WEBHOOK_PATH, data=b"{}")).text() == "routed"
    assert seen == [WEBHOOK_PATH]


async def test_the_door_stays_shut_for_an_app_with_sub_applications(
    aiohttp_client: MakeClient,
) -> None:
    @web.middleware
    async def stamp(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        response.headers["X-Stamp"] = "1"
        return response

    inner = web.Application(middlewares=[stamp])
    inner.router.add_post("/avionte", _answer("nested"))
    app = web.Application()
    app.add_subapp("/webhooks", inner)
    app[WEBHOOK] = _answer("direct")
    client = await aiohttp_client(app)
    assert not open_front_door(app, _server(client))
    response = await client.post(WEBHOOK_PATH, data=b"{}")
    assert (await response.text(), response.headers["X-Stamp"]) == ("nested", "1")


async def _raw(client: Client, target: str) -> bytes:
    """The body of the answer to a POST whose request target is sent exactly as given."""
    host, port = client.server.host, client.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n"
            "Connection: close\r\n\r\n{}".encode()
        )
        answer = await reader.read()
    finally:
        writer.close()
    return answer.partition(b"\r\n\r\n")[2]


async def test_only_the_exact_target_takes_the_door(aiohttp_client: MakeClient) -> None:
    app = web.Application()
    app.router.add_post(WEBHOOK_PATH, _answer("routed"))
    app[WEBHOOK] = _answer("direct")
    client = await aiohttp_client(app)
    assert open_front_door(app, _server(client))

    assert await _raw(client, WEBHOOK_PATH) == b"direct"
    # Absolute form and a fragment: the router still finds the webhook for them.
    assert await _raw(client, f"http://{client.server.host}{WEBHOOK_PATH}") == b"routed"
    assert await _raw(client, f"{WEBHOOK_PATH}#x") == b"routed"


async def test_the_door_stays_shut_for_an_app_with_response_hooks(
    aiohttp_client: MakeClient,
) -> None:
    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-Stamp"] = "1"

    app = web.Application()
    app.on_response_prepare.append(stamp)
    app.router.add_post(WEBHOOK_PATH, _answer("routed"))
    app[WEBHOOK] = _answer("direct")
    client = await aiohttp_client(app)
    assert not open_front_door(app, _server(client))
    response = await client.post(WEBHOOK_PATH, data=b"{}")
    assert (await response.text(), response.headers["X-Stamp"]) == ("routed", "1")


async def _answers(client: Client) -> list[tuple[int, bytes, str | None]]:
    """What the receiver says to a range of requests, each of them as an Avionté or a stray."""
    calls: list[Awaitable[Any]] = [
        client.post(WEBHOOK_PATH, data=BODY, headers=KEY),
        client.post(WEBHOOK_PATH, data=BODY, headers={"X-api-key": "wrong"}),
        client.post(WEBHOOK_PATH, data=b"{not json", headers=KEY),
        client.post(WEBHOOK_PATH, data=b"x" * 2048, headers=KEY),
        client.post(f"{WEBHOOK_PATH}?tenant=1", data=BODY, headers=KEY),
        client.post(WEBHOOK_PATH, data=BODY, headers=KEY, expect100=True),
        client.post(f"{WEBHOOK_PATH}/", data=BODY, headers=KEY),
        client.get(WEBHOOK_PATH),
        client.head(WEBHOOK_PATH),
        client.put(WEBHOOK_PATH, data=BODY, headers=KEY),
    ]
    answers = []
    for call in calls:
        response = await call
        answers.append((response.status, await response.read(), response.headers.get("Allow")))
    return answers


async def test_the_receiver_answers_alike_with_the_door_open_or_shut(
    aiohttp_client: MakeClient, receiver_client: MakeClient
) -> None:
    settings = receiver_settings("unit", max_body_bytes=1024)
    through_router, through_door = MemoryPublisher(), MemoryPublisher()
    shut = await aiohttp_client(create_app(settings, publisher=through_router))
    open_ = await receiver_client(create_app(settings, publisher=through_door))

    routed, direct = await asyncio.gather(_answers(shut), _answers(open_))
    assert direct == routed
    assert [status for status, _, _ in direct] == [200, 401, 200, 413, 200, 200, 404, 405, 405, 405]
    assert [m.body for m in through_door.published] == [m.body for m in through_router.published]
    assert len(through_door.published) == 4


async def test_the_receiver_as_run_opens_the_door(spawn_receiver: SpawnReceiver) -> None:
    receiver = await spawn_receiver()
    [listening] = receiver.events("receiver listening")
    assert listening["direct_route"] is True


async def test_a_handler_that_only_returns_an_awaitable_serves_both_ways(
    aiohttp_client: MakeClient,
) -> None:
    # As the traced webhook is: not a coroutine function, so that a delivery the sampler
    # drops is the handler's own coroutine.
    inner = _answer("handled")
    calls: list[str] = []

    def handler(request: web.Request) -> Awaitable[web.StreamResponse]:
        calls.append(request.path)
        return inner(request)

    app = web.Application()
    app.router.add_post(WEBHOOK_PATH, routable(handler))  # the router warns for bare functions
    app[WEBHOOK] = handler
    client = await aiohttp_client(app)
    assert open_front_door(app, _server(client))

    assert await (await client.post(WEBHOOK_PATH, data=b"{}")).text() == "handled"
    expecting = await client.post(WEBHOOK_PATH, data=b"{}", expect100=True)
    assert await expecting.text() == "handled"
    assert calls == [WEBHOOK_PATH, WEBHOOK_PATH]
    assert routable(inner) is inner
