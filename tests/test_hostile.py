"""Abusive clients: allowlist, damping, slow bodies and headers, limits, connection cap, TLS."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from service.app import WEBHOOK_PATH, create_app
from service.errors import SettingsError
from service.server import tls_context
from service.sources import SourcePolicy, parse_networks
from tests.fakes import MemoryPublisher
from tests.receivers import Receiver, SpawnReceiver
from tests.support import API_KEYS, fixture_bodies, receiver_settings

Client = TestClient[Any, Any]
BODY = fixture_bodies()["talent_created"]
GOOD = {"X-api-key": API_KEYS[0]}
BAD = {"X-api-key": "guessing"}


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Callable[..., Awaitable[Client]]:
    async def make(**overrides: Any) -> Client:
        settings = receiver_settings("unit", **overrides)
        return await aiohttp_client(create_app(settings, publisher=MemoryPublisher()))

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


async def test_connections_over_the_cap_are_closed(spawn_receiver: SpawnReceiver) -> None:
    receiver = await spawn_receiver(MAX_CONNECTIONS="4")
    host, port = receiver.url.removeprefix("http://").split(":")
    idle = [await asyncio.open_connection(host, int(port)) for _ in range(4)]
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection(host, int(port))
    assert await asyncio.wait_for(reader.read(1), 5) == b""  # closed at once
    writer.close()
    for _, idle_writer in idle:
        idle_writer.close()
    await asyncio.sleep(0.2)
    assert (await _status_of(host, int(port))).startswith(b"HTTP/1.1 200")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls(spawn_receiver: SpawnReceiver, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    trust = ssl.create_default_context(cafile=str(cert))
    receiver: Receiver = await spawn_receiver(
        tls=trust, TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(key)
    )
    https = receiver.url
    plain = https.replace("https://", "http://")
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{https}{WEBHOOK_PATH}", data=BODY, headers=GOOD, ssl=trust
        ) as response:
            assert response.status == 200
            assert json.loads(await response.read())["status"] == "accepted"
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"{plain}/healthz"):
                pass


def test_tls_is_1_2_or_newer(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    context = tls_context(receiver_settings("unit", tls_cert_file=cert, tls_key_file=key))
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_an_unloadable_certificate_names_the_variable(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(SettingsError, match="TLS_CERT_FILE"):
        tls_context(receiver_settings("unit", tls_cert_file=junk, tls_key_file=junk))
