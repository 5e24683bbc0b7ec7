"""The receiver when the broker is unreachable, drops the link, or stalls; through a TCP proxy."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from service.http.app import WEBHOOK_PATH, create_app
from service.shared.environment import Secret
from tests.conftest import ReceiverFactory
from tests.receivers import base_env, free_port
from tests.support import AMQP_URL, API_KEYS, BusView, auth_headers, receiver_settings
from tests.tools.tcp_proxy import TcpProxy

pytestmark = pytest.mark.rabbit

Client = TestClient[Any, Any]
PUBLISH_TIMEOUT = 1.0


def via(proxy: TcpProxy) -> Secret:
    return Secret(proxy.url_for(AMQP_URL))


async def post_event(client: Client) -> tuple[int, str, float]:
    """Post one fresh event; return the status, its id and the seconds it took."""
    correlation_id = str(uuid.uuid4())
    body = json.dumps({"EventName": "placement_updated", "CorrelationId": correlation_id}).encode()
    started = time.monotonic()
    response = await client.post(WEBHOOK_PATH, data=body, headers=auth_headers("api_key", body))
    if response.status == 503:
        assert response.headers["Retry-After"] == "5"
    return response.status, correlation_id, time.monotonic() - started


async def until_accepted(client: Client, within: float = 20.0) -> str:
    """Post until one is accepted; fail if none is within `within` seconds."""
    async with asyncio.timeout(within):
        while True:
            status, correlation_id, _ = await post_event(client)
            if status == 200:
                return correlation_id
            assert status == 503
            await asyncio.sleep(0.2)


async def test_unreachable_at_start_gives_503_then_recovers(
    bus: BusView, proxy: TcpProxy, receiver_client: Any
) -> None:
    proxy.refuse(True)
    settings = receiver_settings(
        bus.names.prefix, amqp_url=via(proxy), publish_timeout=PUBLISH_TIMEOUT
    )
    client: Client = await receiver_client(create_app(settings))
    assert (await client.get("/readyz")).status == 503
    for _ in range(5):
        status, _, took = await post_event(client)
        assert status == 503
        assert took < PUBLISH_TIMEOUT  # no connection fails fast, without waiting for a confirm
    queue = await bus.probe("placement.updated")
    proxy.refuse(False)
    correlation_id = await until_accepted(client)
    assert (await client.get("/readyz")).status == 200
    assert (await bus.get(queue)).message_id == correlation_id


async def test_lost_link_gives_503_then_recovers(
    bus: BusView, proxy: TcpProxy, start_receiver: ReceiverFactory
) -> None:
    client = await start_receiver(amqp_url=via(proxy), publish_timeout=PUBLISH_TIMEOUT)
    queue = await bus.probe("placement.updated")
    assert (await post_event(client))[0] == 200

    proxy.refuse(True)
    await proxy.cut()
    async with asyncio.timeout(5):
        while (await client.get("/readyz")).status != 503:
            await asyncio.sleep(0.02)
    results = await asyncio.gather(*(post_event(client) for _ in range(20)))
    assert [status for status, _, _ in results] == [503] * 20

    proxy.refuse(False)
    correlation_id = await until_accepted(client)
    received = {message.message_id for message in await _drain_until(bus, queue, correlation_id)}
    assert correlation_id in received


async def test_stalled_link_answers_503_after_the_timeout_then_recovers(
    bus: BusView, proxy: TcpProxy, start_receiver: ReceiverFactory
) -> None:
    client = await start_receiver(amqp_url=via(proxy), publish_timeout=PUBLISH_TIMEOUT)
    queue = await bus.probe("placement.updated")
    assert (await post_event(client))[0] == 200

    proxy.stall()
    results = await asyncio.gather(*(post_event(client) for _ in range(10)))
    for status, _, took in results:
        assert status == 503
        # The lower bound is the point; the upper one only catches a hang.
        assert took >= PUBLISH_TIMEOUT - 0.05
        assert took < PUBLISH_TIMEOUT + 5

    proxy.resume()
    correlation_id = await until_accepted(client)
    # Held publishes may land after the link resumes: at-least-once, never lost.
    received = {message.message_id for message in await _drain_until(bus, queue, correlation_id)}
    assert correlation_id in received


async def _drain_until(bus: BusView, queue: Any, message_id: str) -> list[Any]:
    messages: list[Any] = []
    async with asyncio.timeout(10):
        while not any(message.message_id == message_id for message in messages):
            messages.append(await bus.get(queue))
    return messages


async def test_unroutable_return_is_a_503(bus: BusView, start_receiver: ReceiverFactory) -> None:
    client = await start_receiver()
    # Without its queue, the alternate exchange routes nowhere and the broker returns the message.
    await bus.channel.queue_delete(bus.names.unrouted)
    status, _, _ = await post_event(client)
    assert status == 503


async def test_a_return_is_never_charged_to_a_twin(
    bus: BusView, start_receiver: ReceiverFactory
) -> None:
    # Avionté's retries share one message id; two of them in flight must both see the return.
    client = await start_receiver()
    await bus.channel.queue_delete(bus.names.unrouted)
    body = json.dumps({"EventName": "talent_saved", "CorrelationId": "twin"}).encode()
    headers = auth_headers("api_key", body)
    for _ in range(5):
        responses = await asyncio.gather(
            *(client.post(WEBHOOK_PATH, data=body, headers=headers) for _ in range(4))
        )
        assert [response.status for response in responses] == [503] * 4


async def test_nack_is_a_503(bus: BusView, start_receiver: ReceiverFactory) -> None:
    client = await start_receiver()
    await bus.declare()
    full = await bus.channel.declare_queue(
        f"{bus.names.prefix}.full",
        exclusive=True,
        arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
    )
    await full.bind(bus.names.events, routing_key="placement.updated")
    status, _, _ = await post_event(client)
    assert status == 503
    await full.unbind(bus.names.events, routing_key="placement.updated")
    assert (await post_event(client))[0] == 200


def with_heartbeat(proxy: TcpProxy, seconds: int) -> Secret:
    return Secret(str(URL(proxy.url_for(AMQP_URL)).update_query(heartbeat=seconds)))


@pytest.mark.parametrize("spooled", [True, False], ids=["spool", "no-spool"])
async def test_a_stall_the_heartbeat_ends_leaves_no_delivery_unanswered(
    bus: BusView, proxy: TcpProxy, start_receiver: ReceiverFactory, tmp_path: Path, spooled: bool
) -> None:
    # The heartbeat notices the stall long before PUBLISH_TIMEOUT: aiormq then ends the
    # confirms in flight with CancelledError, which must not cancel the requests too.
    spool = {"spool_dir": tmp_path / "spool"} if spooled else {}
    client = await start_receiver(amqp_url=with_heartbeat(proxy, 2), publish_timeout=30, **spool)
    queue = await bus.probe("placement.updated")
    assert (await post_event(client))[0] == 200
    await bus.drain(queue)

    proxy.stall()
    results = await asyncio.gather(*(post_event(client) for _ in range(12)))
    statuses = [status for status, _, _ in results]
    if spooled:
        assert statuses == [200] * 12
    else:
        assert set(statuses) <= {200, 503}
    proxy.resume()
    await proxy.cut()  # the stalled connection is dead to the receiver; let it reconnect
    stored = {correlation_id for status, correlation_id, _ in results if status == 200}
    async with asyncio.timeout(30):
        received: set[str] = set()
        while not stored <= received:
            received.add(str((await bus.get(queue, timeout=30)).message_id))


async def test_deliveries_sharing_an_id_are_answered_within_the_timeout(
    bus: BusView, proxy: TcpProxy, start_receiver: ReceiverFactory
) -> None:
    client = await start_receiver(amqp_url=via(proxy), publish_timeout=PUBLISH_TIMEOUT)
    assert (await post_event(client))[0] == 200
    proxy.stall()

    async def post(n: int) -> tuple[int, float]:
        body = json.dumps(
            {"EventName": "placement_updated", "CorrelationId": "shared-id", "N": n}
        ).encode()
        started = time.monotonic()
        response = await client.post(WEBHOOK_PATH, data=body, headers=auth_headers("api_key", body))
        return response.status, time.monotonic() - started

    results = await asyncio.gather(*(post(n) for n in range(6)))
    assert [status for status, _ in results] == [503] * 6
    # Each waits for the earlier publishes of its id, but never past its own deadline.
    assert max(took for _, took in results) < PUBLISH_TIMEOUT + 1.5
    proxy.resume()


@pytest.mark.parametrize("nodes", [1, 2])
async def test_a_session_that_fails_after_connecting_backs_off_whatever_the_nodes(
    bus: BusView, tmp_path: Path, nodes: int
) -> None:
    # A quarantine queue of the wrong type: every session connects, then its declare fails.
    await bus.channel.declare_queue(bus.names.invalid, durable=True)
    urls = [AMQP_URL, str(URL(AMQP_URL).with_host("localhost"))][:nodes]
    log = tmp_path / "receiver.log"
    env = base_env(
        AMQP_URL=",".join(urls),
        BUS_PREFIX=bus.names.prefix,
        WEBHOOK_API_KEYS=API_KEYS[0],
        HOST="127.0.0.1",
        PORT=str(free_port()),
        LOG_FORMAT="json",
    )
    with log.open("w") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", env=env, stderr=stderr
        )
    try:

        def failures() -> list[dict[str, Any]]:
            lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            return [
                line for line in lines if str(line["event"]).startswith("broker session failed")
            ]

        async with asyncio.timeout(20):
            while not failures():
                await asyncio.sleep(0.05)
        await asyncio.sleep(4)
        seen = failures()
    finally:
        process.kill()
        await process.wait()
    # The pauses run 0.5, 1, 2, 5 s: a handful of attempts in 4 s, not hundreds.
    assert 1 < len(seen) <= 5
    assert "PRECONDITION_FAILED" in seen[0]["detail"]
    assert [line["retry_in_s"] for line in seen[:3]] == [0.5, 1.0, 2.0]
