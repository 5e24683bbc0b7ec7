"""The receiver's listener: the connection cap counts accepted sockets, TLS included, and TLS."""

from __future__ import annotations

import asyncio
import json
import resource
import ssl
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from service.http.app import WEBHOOK_PATH
from service.http.limits import RESERVED
from service.http.server import tls_context
from service.shared.errors import SettingsError
from tests.receivers import Receiver, SpawnReceiver
from tests.support import API_KEYS, fixture_bodies, receiver_settings, status_line

BODY = fixture_bodies()["talent_created"]
GOOD = {"X-api-key": API_KEYS[0]}
REQUEST = (
    f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nX-api-key: {API_KEYS[0]}\r\n"
    f"Connection: close\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
    + BODY
)

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def address(receiver: Receiver) -> tuple[str, int]:
    host, port = receiver.url.split("://")[1].split(":")
    return host, int(port)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds` (sending nothing)."""
    try:
        return await asyncio.wait_for(reader.read(1), seconds) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def open_idle(receiver: Receiver, count: int) -> list[Connection]:
    host, port = address(receiver)
    return [await asyncio.open_connection(host, port) for _ in range(count)]


def close_all(connections: list[Connection]) -> None:
    for _, writer in connections:
        writer.close()


async def test_connections_over_the_cap_are_closed(spawn_receiver: SpawnReceiver) -> None:
    receiver = await spawn_receiver(MAX_CONNECTIONS="4")
    idle = await open_idle(receiver, 4)
    await asyncio.sleep(0.2)
    [(reader, writer)] = await open_idle(receiver, 1)
    assert await closed_within(reader, 5)  # closed at once
    writer.close()
    close_all(idle)
    await asyncio.sleep(0.2)
    assert (await status_line(*address(receiver), REQUEST)).startswith(b"HTTP/1.1 200")


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


async def spawn_tls(
    spawn_receiver: SpawnReceiver, certificate: tuple[Path, Path], **settings: str
) -> tuple[Receiver, ssl.SSLContext]:
    cert, key = certificate
    trust = ssl.create_default_context(cafile=str(cert))
    receiver = await spawn_receiver(
        tls=trust, TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(key), **settings
    )
    return receiver, trust


async def post_tls(receiver: Receiver, trust: ssl.SSLContext) -> int | str:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{receiver.url}{WEBHOOK_PATH}", data=BODY, headers=GOOD, ssl=trust
            ) as response,
        ):
            return response.status
    except aiohttp.ClientError as exc:
        return type(exc).__name__


async def test_tls(spawn_receiver: SpawnReceiver, certificate: tuple[Path, Path]) -> None:
    receiver, trust = await spawn_tls(spawn_receiver, certificate)
    plain = receiver.url.replace("https://", "http://")
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{receiver.url}{WEBHOOK_PATH}", data=BODY, headers=GOOD, ssl=trust
        ) as response:
            assert response.status == 200
            assert json.loads(await response.read())["status"] == "accepted"
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"{plain}/healthz"):
                pass


async def test_tls_handshakes_count_against_the_cap_and_are_cut_at_the_keepalive_timeout(
    spawn_receiver: SpawnReceiver, certificate: tuple[Path, Path]
) -> None:
    receiver, trust = await spawn_tls(
        spawn_receiver, certificate, MAX_CONNECTIONS="4", KEEPALIVE_TIMEOUT="2"
    )
    # Thirty connections at once that never send a ClientHello.
    started = time.monotonic()
    silent = await open_idle(receiver, 30)
    early = await asyncio.gather(*(closed_within(reader, 0.5) for reader, _ in silent))
    assert sum(early) >= 26  # over the cap: closed as they arrive
    assert await post_tls(receiver, trust) != 200  # the cap is full of handshakes
    held = [reader for (reader, _), closed in zip(silent, early, strict=True) if not closed]
    assert all(await asyncio.gather(*(closed_within(reader, 10) for reader in held)))
    assert 1.5 <= time.monotonic() - started <= 4.5  # cut at KEEPALIVE_TIMEOUT
    close_all(silent)
    assert await post_tls(receiver, trust) == 200  # their places are free again


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


async def test_a_low_soft_descriptor_limit_is_raised_toward_the_hard_one(
    spawn_receiver: SpawnReceiver,
) -> None:
    receiver = await spawn_receiver(wrap=lambda argv: ["prlimit", "--nofile=100:4096", "--", *argv])
    [listening] = receiver.events("receiver listening")
    assert listening["max_connections"] == 1024  # the default, which fits once raised
    assert not receiver.events("MAX_CONNECTIONS lowered to fit the file-descriptor limit")
    nofile = resource.prlimit(receiver.process.pid, resource.RLIMIT_NOFILE)
    assert nofile == (1024 + RESERVED, 4096)
