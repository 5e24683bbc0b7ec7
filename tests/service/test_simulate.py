"""The delivery simulator: Avionté's retry schedule, and realistic traffic to a real receiver."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.__main__ import main
from service.http.app import WEBHOOK_PATH, create_app
from service.shared.samples import KNOWN_EVENTS
from service.simulate import Credential, Summary, simulate
from tests.fakes import MemoryPublisher
from tests.support import API_KEYS, FIXTURES, SHARED_SECRETS, receiver_settings

MINUTE = 0.3


class Flaky:
    """A receiver that fails the first `failures` attempts, remembering when each came."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.arrivals: list[float] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.monotonic())
        await request.read()
        if len(self.arrivals) <= self.failures:
            return web.Response(status=503)
        return web.json_response({"status": "accepted"})


async def serve(aiohttp_server: Callable[..., Awaitable[TestServer]], flaky: Flaky) -> str:
    app = web.Application()
    app.router.add_post(WEBHOOK_PATH, flaky.handle)
    server = await aiohttp_server(app)
    return str(server.make_url(WEBHOOK_PATH))


async def one_delivery(url: str) -> Summary:
    """Simulate one delivery on the shortened schedule."""
    return await simulate(
        url,
        Credential(api_key="k"),
        count=1,
        rate=10,
        fixtures=FIXTURES,
        minute=MINUTE,
        progress=False,
    )


async def test_two_503s_are_retried_by_the_schedule(aiohttp_server: Any) -> None:
    flaky = Flaky(failures=2)
    url = await serve(aiohttp_server, flaky)
    summary = await one_delivery(url)
    assert (summary.sent, summary.accepted, summary.retried, summary.given_up) == (1, 1, 1, 0)
    first, second, third = flaky.arrivals
    assert second - first < MINUTE / 2  # an immediate retry
    assert third - second >= MINUTE * 0.9  # then one after "a minute"


async def test_a_receiver_that_always_fails_is_given_up_on_after_four_attempts(
    aiohttp_server: Any,
) -> None:
    flaky = Flaky(failures=1000)
    url = await serve(aiohttp_server, flaky)
    summary = await one_delivery(url)
    assert (summary.sent, summary.accepted, summary.given_up) == (1, 0, 1)
    assert len(flaky.arrivals) == 4
    gaps = [b - a for a, b in zip(flaky.arrivals, flaky.arrivals[1:], strict=False)]
    assert gaps[0] < MINUTE / 2
    assert gaps[1] >= MINUTE * 0.9
    assert gaps[2] < MINUTE / 2
    assert "given up 1" in summary.report()


async def test_fixtures_and_generated_events_reach_a_real_receiver(
    receiver_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> None:
    publisher = MemoryPublisher()
    client = await receiver_client(create_app(receiver_settings("sim"), publisher=publisher))
    url = str(client.server.make_url(WEBHOOK_PATH))
    for credential in (
        Credential(api_key=API_KEYS[0]),
        Credential(secret=SHARED_SECRETS[0]),
        Credential(secret=SHARED_SECRETS[1], sign=True),
    ):
        summary = await simulate(
            url, credential, count=14, rate=500, fixtures=FIXTURES, progress=False
        )
        assert (summary.accepted, summary.given_up) == (14, 0)
    summary = await simulate(
        url,
        Credential(api_key=API_KEYS[1]),
        count=len(KNOWN_EVENTS),
        rate=500,
        events=KNOWN_EVENTS,
        progress=False,
    )
    assert summary.accepted == len(KNOWN_EVENTS)
    ids = [json.loads(message.body)["CorrelationId"] for message in publisher.published]
    assert len(ids) == len(set(ids)) == 3 * 14 + len(KNOWN_EVENTS)
    names = {json.loads(message.body)["EventName"] for message in publisher.published}
    assert set(KNOWN_EVENTS) <= names


def test_the_command_line_needs_a_credential(monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.delenv("WEBHOOK_API_KEYS", raising=False)
    monkeypatch.delenv("WEBHOOK_SHARED_SECRETS", raising=False)
    assert main(["simulate", "http://127.0.0.1:1/webhooks/avionte"]) == 2
    assert "--api-key" in capsys.readouterr().err
