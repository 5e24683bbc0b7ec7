"""`python -m service` as an operator runs it: start-up errors, logs, and SIGTERM under load."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

import aiohttp
import pytest

from tests.receivers import Receiver, SpawnReceiver, base_env, readyz, run_service
from tests.support import AMQP_URL, API_KEYS, SHARED_SECRETS, BusView, fixture_bodies, status_line
from tests.tools.tcp_proxy import proxy_to

BROKER_PASSWORD = "guest"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "WEBHOOK_API_KEYS"),
        ({"WEBHOOK_API_KEYS": "k-31337", "AMQP_URL": "http://k-31337@x/"}, "AMQP_URL"),
        ({"WEBHOOK_API_KEYS": "k-31337", "PORT": "eighty"}, "PORT"),
        ({"WEBHOOK_SHARED_SECRETS": "s-31337", "PUBLISH_TIMEOUT": "-1"}, "PUBLISH_TIMEOUT"),
        ({"WEBHOOK_API_KEYS_FILE": "/nonexistent/k-31337"}, "WEBHOOK_API_KEYS_FILE"),
    ],
)
def test_bad_settings_exit_2_naming_the_variable(env: dict[str, str], variable: str) -> None:
    result = run_service(base_env(**env))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {variable}: ")
    assert "31337" not in result.stderr + result.stdout


@pytest.fixture
async def receiver(spawn_receiver: SpawnReceiver) -> Receiver:
    return await spawn_receiver()


async def test_sigterm_during_a_burst_loses_nothing(bus: BusView, receiver: Receiver) -> None:
    everything = await bus.probe("#")
    template = json.loads(fixture_bodies()["placement_updated"])
    outcomes: dict[str, int | str] = {}
    answered = asyncio.Event()

    async def deliver(session: aiohttp.ClientSession, correlation_id: str) -> None:
        body = json.dumps({**template, "CorrelationId": correlation_id}).encode()
        try:
            async with session.post(
                f"{receiver.url}/webhooks/avionte", data=body, headers={"X-api-key": API_KEYS[1]}
            ) as response:
                outcomes[correlation_id] = response.status
        except aiohttp.ClientError as exc:
            outcomes[correlation_id] = type(exc).__name__
        if len(outcomes) >= 100:
            answered.set()

    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        burst = [asyncio.create_task(deliver(session, str(uuid.uuid4()))) for _ in range(400)]
        await answered.wait()
        receiver.process.send_signal(signal.SIGTERM)
        await asyncio.gather(*burst)
    async with asyncio.timeout(15):
        assert await receiver.process.wait() == 0

    accepted = {cid for cid, outcome in outcomes.items() if outcome == 200}
    assert len(accepted) >= 100
    refused = {cid: outcome for cid, outcome in outcomes.items() if outcome != 200}
    assert all(outcome == 503 or isinstance(outcome, str) for outcome in refused.values())
    on_queue = {message.message_id for message in await bus.drain(everything)}
    assert accepted <= on_queue

    lines = receiver.log_lines()
    events = [line["event"] for line in lines]
    assert events.index("shutting down") < events.index("stopped")
    deliveries = [line for line in lines if line["event"] == "delivery"]
    assert {line["message_id"] for line in deliveries if line["status"] == 200} == accepted
    for line in deliveries:
        assert {"delivery_id", "outcome", "status", "duration_ms"} <= set(line)
        if line["outcome"] == "accepted":
            assert line["event_name"] == "placement_updated"
            assert line["tenant_id"] == 6


async def test_logs_hold_no_secret_and_no_body(bus: BusView, receiver: Receiver) -> None:
    body = fixture_bodies()["talent_merged"]
    async with aiohttp.ClientSession() as session:
        for headers in (
            {"X-api-key": API_KEYS[0]},
            {"X-Payload-Signature": SHARED_SECRETS[1]},
            {"X-api-key": API_KEYS[0] + "-wrong"},
            {"X-Payload-Signature": SHARED_SECRETS[0] + "-wrong"},
        ):
            async with session.post(
                f"{receiver.url}/webhooks/avionte", data=body, headers=headers
            ) as response:
                assert response.status in (200, 401)
    receiver.process.send_signal(signal.SIGTERM)
    assert await receiver.process.wait() == 0
    text = receiver.log.read_text()
    assert text.count('"event":"delivery"') == 4
    for secret in (*API_KEYS, *SHARED_SECRETS, f":{BROKER_PASSWORD}@"):
        assert secret not in text
    for fragment in ("GoodTalentId", "ResourceModelType", "Avionte.Commons"):
        assert fragment not in text


async def test_sigterm_waits_for_publishes_held_by_a_stalled_broker(
    bus: BusView, spawn_receiver: SpawnReceiver
) -> None:
    async with proxy_to(AMQP_URL) as (proxy, through_proxy):
        receiver = await spawn_receiver(AMQP_URL=through_proxy, SHUTDOWN_GRACE="1")
        everything = await bus.probe("#")
        template = json.loads(fixture_bodies()["talent_created"])
        proxy.stall()
        async with aiohttp.ClientSession() as session:

            async def deliver(correlation_id: str) -> int:
                body = json.dumps({**template, "CorrelationId": correlation_id}).encode()
                async with session.post(
                    f"{receiver.url}/webhooks/avionte",
                    data=body,
                    headers={"X-api-key": API_KEYS[0]},
                ) as response:
                    return response.status

            ids = [str(uuid.uuid4()) for _ in range(20)]
            held = [asyncio.create_task(deliver(cid)) for cid in ids]
            await asyncio.sleep(0.5)  # every publish is now waiting for its confirm
            receiver.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            assert await readyz(receiver.url) == 503  # not ready at once, during the grace
            proxy.resume()
            statuses = await asyncio.gather(*held)
        assert await receiver.process.wait() == 0
    assert statuses == [200] * len(ids)
    on_queue = [str(message.message_id) for message in await bus.drain(everything)]
    assert sorted(on_queue) == sorted(ids)


async def test_malformed_headers_never_leak_a_secret(bus: BusView, receiver: Receiver) -> None:
    host, port = receiver.url.removeprefix("http://").split(":")
    for header in (
        f"X-api-key: {API_KEYS[0]}\x01",
        f"X-Payload-Signature: {SHARED_SECRETS[0]}\r",
        f"X-api-key {API_KEYS[1]}",
    ):
        request = f"POST /webhooks/avionte HTTP/1.1\r\nHost: x\r\n{header}\r\n"
        request += "Content-Length: 2\r\n\r\n{}"
        answer = await status_line(host, int(port), request.encode())
        assert answer.split()[1] in (b"400", b"401")
    receiver.process.send_signal(signal.SIGTERM)
    assert await receiver.process.wait() == 0
    text = receiver.log.read_text()
    for secret in (*API_KEYS, *SHARED_SECRETS):
        assert secret not in text
