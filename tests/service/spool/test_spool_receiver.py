"""The receiver with a spool, against the real broker through the TCP proxy."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.http.app import WEBHOOK_PATH, create_app
from service.shared.environment import Secret
from tests.receivers import ROOT, run_service
from tests.support import AMQP_URL, API_KEYS, BusView, auth_headers, receiver_settings
from tests.tools.tcp_proxy import TcpProxy

pytestmark = pytest.mark.rabbit

Client = TestClient[Any, Any]


async def start(
    receiver_client: Any, bus: BusView, proxy: TcpProxy, spool: Path, **extra: Any
) -> Client:
    settings = receiver_settings(
        bus.names.prefix,
        amqp_url=Secret(proxy.url_for(AMQP_URL)),
        publish_timeout=1.0,
        spool_dir=spool,
        **extra,
    )
    client: Client = await receiver_client(create_app(settings))
    async with asyncio.timeout(10):
        while (await client.get("/readyz")).status != 200:
            await asyncio.sleep(0.05)
    return client


async def post(client: Client) -> tuple[int, str]:
    correlation_id = str(uuid.uuid4())
    body = json.dumps({"EventName": "talent_created", "CorrelationId": correlation_id}).encode()
    response = await client.post(WEBHOOK_PATH, data=body, headers=auth_headers("api_key", body))
    return response.status, correlation_id


async def readiness(client: Client) -> dict[str, Any]:
    response = await client.get("/readyz")
    payload: dict[str, Any] = await response.json()
    payload["http"] = response.status
    return payload


async def drained(client: Client) -> None:
    """Wait until the receiver's spool is empty again."""
    async with asyncio.timeout(10):
        while (await readiness(client))["spool"]["records"]:
            await asyncio.sleep(0.05)


async def received(bus: BusView, queue: Any, expected: set[str], within: float = 20) -> list[str]:
    seen: list[str] = []
    async with asyncio.timeout(within):
        while not expected <= set(seen):
            seen.append(str((await bus.get(queue, timeout=within)).message_id))
    return seen


async def test_an_outage_is_spooled_then_drained(
    bus: BusView, proxy: TcpProxy, receiver_client: Any, tmp_path: Path
) -> None:
    client = await start(receiver_client, bus, proxy, tmp_path / "spool")
    queue = await bus.probe("talent.created")
    proxy.refuse(True)
    await proxy.cut()
    async with asyncio.timeout(5):
        while (await readiness(client))["broker"] != "disconnected":
            await asyncio.sleep(0.02)

    results = await asyncio.gather(*(post(client) for _ in range(100)))
    assert {status for status, _ in results} == {200}
    state = await readiness(client)
    assert state["http"] == 200
    assert state["spool"]["records"] == 100
    assert state["spool"]["bytes"] > 0

    proxy.refuse(False)
    await received(bus, queue, {cid for _, cid in results})
    await drained(client)


async def test_a_stalled_link_spools_after_the_timeout(
    bus: BusView, proxy: TcpProxy, receiver_client: Any, tmp_path: Path
) -> None:
    client = await start(receiver_client, bus, proxy, tmp_path / "spool")
    queue = await bus.probe("talent.created")
    proxy.stall()
    results = await asyncio.gather(*(post(client) for _ in range(20)))
    assert {status for status, _ in results} == {200}
    assert (await readiness(client))["spool"]["records"] == 20
    proxy.resume()
    # Held publishes may arrive as well as the drained copies: duplicates, never loss.
    await received(bus, queue, {cid for _, cid in results})


async def test_a_restart_drains_what_an_earlier_run_spooled(
    bus: BusView, proxy: TcpProxy, receiver_client: Any, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    first = await start(receiver_client, bus, proxy, spool)
    queue = await bus.probe("talent.created")
    proxy.refuse(True)
    await proxy.cut()
    results = [await post(first) for _ in range(10)]
    assert {status for status, _ in results} == {200}
    await first.close()  # a clean shutdown with a non-empty spool

    proxy.refuse(False)
    second = await start(receiver_client, bus, proxy, spool)
    await received(bus, queue, {cid for _, cid in results})
    await drained(second)


async def test_a_full_spool_answers_503(
    bus: BusView, proxy: TcpProxy, receiver_client: Any, tmp_path: Path
) -> None:
    client = await start(receiver_client, bus, proxy, tmp_path / "spool", spool_max_bytes=2000)
    proxy.refuse(True)
    await proxy.cut()
    statuses = [(await post(client))[0] for _ in range(10)]
    assert statuses[0] == 200
    assert statuses[-1] == 503
    assert statuses == sorted(statuses)  # once full, it stays full while the broker is away
    state = await readiness(client)
    assert state["http"] == 503
    assert state["spool"]["accepting"] is False


def test_two_receivers_never_share_a_spool(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    env = {
        "PYTHONPATH": str(ROOT),
        "WEBHOOK_API_KEYS": API_KEYS[0],
        "SPOOL_DIR": str(spool),
        "HOST": "127.0.0.1",
        "PORT": "0",
        "AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
    }
    first = subprocess.Popen([sys.executable, "-m", "service"], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not (spool / "lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = run_service(env)
        assert second.returncode == 2
        assert second.stderr.startswith("error: SPOOL_DIR: ")
        assert "in use by another receiver" in second.stderr
    finally:
        first.terminate()
        assert first.wait(timeout=30) == 0
