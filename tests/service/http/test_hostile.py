"""Abusive clients: allowlist, damping, slow bodies and headers, limits, connection cap, TLS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from service.http.app import WEBHOOK_PATH, create_app
from service.sources import SourcePolicy, parse_networks
from tests.fakes import MemoryPublisher
from tests.receivers import SpawnReceiver
from tests.support import API_KEYS, fixture_bodies, receiver_settings

Client = TestClient[Any, Any]
BODY = fixture_bodies()["talent_created"]
GOOD = {"X-api-key": API_KEYS[0]}
BAD = {"X-api-key": "guessing"}


@pytest.fixture
def make_client(
    receiver_client: Callable[..., Awaitable[Client]],
) -> Callable[..., Awaitable[Client]]:
    async def make(**overrides: Any) -> Client:
        settings = receiver_settings("unit", **overrides)
        return await receiver_client(create_app(settings, publisher=MemoryPublisher()))

    return make


def via(address: str, **headers: str) -> dict[str, str]:
    return {"X-Forwarded-For": address, **headers}


async def test_the_allowlist_answers_403_before_authentication(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    policy = SourcePolicy(
        allowed=parse_networks("198.51.100.0/24"), trusted_proxies=parse_networks("127.0.0.1")
    )
    client = await make_client(sources=policy)
    allowed = await client.post(WEBHOOK_PATH, data=BODY, headers=via("198.51.100.7", **GOOD))
    assert allowed.status == 200
    outside = await client.post(WEBHOOK_PATH, data=BODY, headers=via("203.0.113.1", **GOOD))
    assert outside.status == 403
    unauthenticated = await client.post(WEBHOOK_PATH, data=BODY, headers=via("203.0.113.1"))
    assert unauthenticated.status == 403  # before authentication
    assert (await client.get("/readyz")).status == 200  # probes are not behind the allowlist


async def test_a_forged_header_from_an_untrusted_peer_changes_nothing(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client(sources=SourcePolicy(allowed=parse_networks("198.51.100.0/24")))
    forged = await client.post(WEBHOOK_PATH, data=BODY, headers=via("198.51.100.7", **GOOD))
    assert forged.status == 403


async def test_repeated_401s_turn_into_429_and_recover(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client(
        sources=SourcePolicy(trusted_proxies=parse_networks("127.0.0.1")),
        auth_failure_limit=3,
        auth_failure_window=1.0,
    )
    attacker, partner = "203.0.113.66", "198.51.100.7"
    statuses = []
    for _ in range(6):
        response = await client.post(WEBHOOK_PATH, data=BODY, headers=via(attacker, **BAD))
        statuses.append(response.status)
        ok = await client.post(WEBHOOK_PATH, data=BODY, headers=via(partner, **GOOD))
        assert ok.status == 200  # valid traffic from another source is untouched
    assert statuses == [401, 401, 401, 429, 429, 429]
    assert int(response.headers["Retry-After"]) >= 1
    # The damped source itself is never throttled when it authenticates.
    assert (await client.post(WEBHOOK_PATH, data=BODY, headers=via(attacker, **GOOD))).status == 200
    await asyncio.sleep(1.1)
    again = await client.post(WEBHOOK_PATH, data=BODY, headers=via(attacker, **BAD))
    assert again.status == 401


async def test_a_body_that_never_comes_is_cut_off(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client(body_timeout=0.5)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nX-api-key: {API_KEYS[0]}\r\n"
        'Content-Length: 100\r\n\r\n{"EventName"'.encode()
    )
    await writer.drain()
    started = time.monotonic()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_line.startswith(b"HTTP/1.1 408")
    assert 0.4 <= time.monotonic() - started < 3
    writer.close()


async def test_header_limits(spawn_receiver: SpawnReceiver) -> None:
    receiver = await spawn_receiver(MAX_HEADERS="16", MAX_HEADER_BYTES="1024")
    url = f"{receiver.url}{WEBHOOK_PATH}"
    many = {f"X-Filler-{n}": "x" for n in range(40)}
    huge = {"X-Filler": "x" * 4000}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=BODY, headers={**GOOD, **many}) as response:
            assert response.status == 400
        async with session.post(url, data=BODY, headers={**GOOD, **huge}) as response:
            assert response.status in (400, 431)
        async with session.post(url, data=BODY, headers=GOOD) as response:
            assert response.status == 200


async def _status_of(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    body = BODY
    writer.write(
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nX-api-key: {API_KEYS[0]}\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return line


async def test_slow_loris_is_cut_off_while_others_are_served(
    spawn_receiver: SpawnReceiver,
) -> None:
    receiver = await spawn_receiver(KEEPALIVE_TIMEOUT="2")
    host, port = receiver.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nX-api-key: {API_KEYS[0]}\r\n".encode()
    started = time.monotonic()
    closed_after = None
    for index in range(len(request)):
        try:
            writer.write(request[index : index + 1])
            await writer.drain()
        except ConnectionError:
            closed_after = time.monotonic() - started
            break
        # Normal requests keep being served meanwhile.
        assert (await _status_of(host, int(port))).startswith(b"HTTP/1.1 200")
        if reader.at_eof() or await _closed(reader):
            closed_after = time.monotonic() - started
            break
    writer.close()
    assert closed_after is not None
    assert 1.5 <= closed_after <= 4.5


async def _closed(reader: asyncio.StreamReader) -> bool:
    """Wait a second for the server to close the connection."""
    try:
        data = await asyncio.wait_for(reader.read(1), 1.0)
    except TimeoutError:
        return False
    return data == b""


@pytest.mark.parametrize(
    "request_start",
    [
        b"Content-Length: 1000\r\n\r\n12345",  # fewer bytes than declared
        b"Transfer-Encoding: chunked\r\n\r\n10\r\n12345",  # a chunk cut short
    ],
    ids=["content_length", "chunked"],
)
async def test_a_client_that_hangs_up_mid_body_gets_one_quiet_line(
    spawn_receiver: SpawnReceiver, request_start: bytes
) -> None:
    receiver = await spawn_receiver()
    host, port = receiver.url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nX-api-key: {API_KEYS[0]}\r\n".encode()
        + request_start
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    async with asyncio.timeout(5):
        while not receiver.events("delivery"):
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # anything logged after the line
    [line] = receiver.events("delivery")
    assert (line["outcome"], line["level"]) == ("client_gone", "info")
    assert not [entry for entry in receiver.log_lines() if entry["level"] in ("error", "critical")]
    assert "Traceback" not in receiver.log.read_text()
    async with aiohttp.ClientSession() as session, session.get(f"{receiver.url}/metrics") as answer:
        assert 'relay_deliveries_total{outcome="client_gone",routing_key="none"} 1.0' in (
            await answer.text()
        )
