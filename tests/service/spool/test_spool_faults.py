"""The spool's drain against real trouble: a full disk, no file descriptors, a refusing broker."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aio_pika.abc import AbstractQueue

from service.http.app import WEBHOOK_PATH
from tests.receivers import Receiver, SpawnReceiver, base_env, cut_off
from tests.support import AMQP_URL, API_KEYS, BusView
from tests.tools.policies import policy
from tests.tools.small_fs import SmallFilesystem, in_small_filesystem
from tests.tools.tcp_proxy import TcpProxy

pytestmark = pytest.mark.rabbit

HEADERS = {"X-api-key": API_KEYS[0]}


def event() -> tuple[str, bytes]:
    correlation_id = str(uuid.uuid4())
    body = {"EventName": "talent_created", "CorrelationId": correlation_id}
    return correlation_id, json.dumps(body).encode()


async def post_all(receiver: Receiver, bodies: list[bytes]) -> list[int]:
    async with aiohttp.ClientSession() as session:

        async def one(body: bytes) -> int:
            async with session.post(
                receiver.url + WEBHOOK_PATH, data=body, headers=HEADERS
            ) as response:
                return response.status

        return list(await asyncio.gather(*(one(body) for body in bodies)))


async def spool_events(receiver: Receiver, proxy: TcpProxy, count: int) -> set[str]:
    """With the broker link down, `count` deliveries answered 200 from the spool."""
    await cut_off(proxy, receiver)
    made = [event() for _ in range(count)]
    before = (await receiver.status())["spool"]["records"]
    assert await post_all(receiver, [body for _, body in made]) == [200] * count
    assert (await receiver.status())["spool"]["records"] == before + count
    return {correlation_id for correlation_id, _ in made}


async def arrived(bus: BusView, queue: AbstractQueue, ids: set[str], within: float) -> list[str]:
    """Read `queue` until every id in `ids` came; return every id read, repeats included."""
    seen: list[str] = []
    async with asyncio.timeout(within):
        while not ids <= set(seen):
            seen.append(str((await bus.get(queue, timeout=within)).message_id))
    return seen


async def wait_for(receiver: Receiver, check: Any, within: float = 20) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while not check(status := await receiver.status()):
            await asyncio.sleep(0.1)
    return status


async def on_small_disk(
    spawn_receiver: SpawnReceiver, proxy: TcpProxy, tmp_path: Path
) -> tuple[Receiver, SmallFilesystem]:
    """A receiver whose spool is a 1 MiB filesystem of its own, linked through `proxy`."""
    spool_dir = tmp_path / "spool"
    receiver = await spawn_receiver(
        wrap=lambda argv: in_small_filesystem(argv, spool_dir, size=1 << 20),
        AMQP_URL=proxy.url_for(AMQP_URL),
        SPOOL_DIR=str(spool_dir),
        PUBLISH_TIMEOUT="1",
    )
    return receiver, SmallFilesystem(receiver.process.pid, spool_dir)


async def test_the_drain_outlives_a_full_disk(
    bus: BusView, proxy: TcpProxy, spawn_receiver: SpawnReceiver, tmp_path: Path
) -> None:
    receiver, disk = await on_small_disk(spawn_receiver, proxy, tmp_path)
    everything = await bus.probe("#")

    first = await spool_events(receiver, proxy, 20)
    disk.fill()
    proxy.refuse(False)
    await arrived(bus, everything, first, within=20)  # published, though no cursor can be saved
    assert await receiver.metric('relay_spool_drain_failures_total{cause="disk"}') >= 1

    disk.free()
    second = await spool_events(receiver, proxy, 10)
    proxy.refuse(False)
    assert set(await arrived(bus, everything, second, within=20)) == second
    status = await wait_for(receiver, lambda s: s["spool"]["records"] == 0)
    assert status["spool"]["drain"] == "idle"
    assert await receiver.metric("relay_spool_drained_records_total") == 30
    failed = receiver.events("spool drain failed")
    assert failed, "the failed drain was not logged"
    assert "No space left on device" in failed[0]["error"]

    assert await receiver.stop() == 0
    assert "cannot listen" not in receiver.log.read_text()


async def test_idle_connections_cannot_starve_the_drain(
    bus: BusView, proxy: TcpProxy, spawn_receiver: SpawnReceiver, tmp_path: Path
) -> None:
    receiver = await spawn_receiver(
        wrap=lambda argv: ["prlimit", "--nofile=120:120", "--", *argv],
        AMQP_URL=proxy.url_for(AMQP_URL),
        SPOOL_DIR=str(tmp_path / "spool"),
        PUBLISH_TIMEOUT="1",
    )
    [lowered] = receiver.events("MAX_CONNECTIONS lowered to fit the file-descriptor limit")
    cap = lowered["max_connections"]
    assert 0 < cap < 120
    everything = await bus.probe("#")
    spooled = await spool_events(receiver, proxy, 5)

    host, port = receiver.url.removeprefix("http://").split(":")
    idle = [await asyncio.open_connection(host, int(port)) for _ in range(130)]
    await asyncio.sleep(0.5)
    closed = [reader for reader, _ in idle if reader.at_eof()]
    assert len(closed) >= 130 - cap  # over the cap: closed as they came
    proxy.refuse(False)
    assert set(await arrived(bus, everything, spooled, within=20)) == spooled
    for _, writer in idle:
        writer.close()
    await wait_for(receiver, lambda s: s["spool"]["records"] == 0)
    _, body = event()
    async with asyncio.timeout(10):
        while await post_all(receiver, [body]) != [200]:
            await asyncio.sleep(0.2)
    assert not receiver.events("cannot accept connections")


def test_a_cap_that_cannot_fit_the_descriptor_limit_is_refused() -> None:
    env = base_env(WEBHOOK_API_KEYS="k-31337", MAX_CONNECTIONS="1024", PORT="0")
    result = subprocess.run(
        ["prlimit", "--nofile=120:120", "--", sys.executable, "-m", "service"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: MAX_CONNECTIONS: 1024 connections need")
    assert "RLIMIT_NOFILE" in lines[-1]


async def test_a_record_the_broker_keeps_refusing_is_parked_and_the_rest_drains_once(
    bus: BusView, proxy: TcpProxy, spawn_receiver: SpawnReceiver, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    receiver = await spawn_receiver(
        AMQP_URL=proxy.url_for(AMQP_URL), SPOOL_DIR=str(spool_dir), PUBLISH_TIMEOUT="1"
    )
    everything = await bus.probe("#")
    # A quorum queue refuses once it is over its max-length: one message is already there.
    await wait_for(receiver, lambda s: s["broker"] == "connected")
    assert await post_all(receiver, [b"[first]"]) == [200]
    assert (await receiver.status())["spool"]["records"] == 0  # on the broker, not spooled
    await cut_off(proxy, receiver)
    assert await post_all(receiver, [b"[not an event]"]) == [200]  # quarantined, spooled
    events = await spool_events(receiver, proxy, 20)

    invalid = re.escape(bus.names.invalid)
    refuse = {"max-length": 0, "overflow": "reject-publish"}
    with policy(f"^{invalid}$", refuse, queue=bus.names.invalid):
        proxy.refuse(False)
        seen = await arrived(bus, everything, events, within=20)
        # Parked first, then out of the count once the cursor is saved: for a moment a
        # record counts in both, never in neither.
        await wait_for(
            receiver,
            lambda s: (s["spool"]["parked"], s["spool"]["records"]) == (1, 0),
            within=40,
        )
        await asyncio.sleep(2)  # time enough for copies of anything drained twice
        seen += [str(m.message_id) for m in await bus.drain(everything)]
    assert sorted(seen) == sorted(events)  # each exactly once
    [parked_line] = receiver.events("spool record parked: the broker refused it again and again")
    assert parked_line["reason"] == "PublishNacked"
    assert parked_line["routing_key"] == bus.names.invalid
    assert len(list((spool_dir / "parked").iterdir())) == 1
    assert await receiver.metric("relay_spool_parked_records") == 1

    env = base_env(AMQP_URL=AMQP_URL, SPOOL_DIR=str(spool_dir))
    listing = await run_parked(env)
    assert listing.returncode == 0, listing.stderr
    assert "1 parked record" in listing.stdout
    assert "PublishNacked" in listing.stdout
    replay = await run_parked(env, "--replay")
    assert replay.returncode == 0, replay.stderr
    assert "replayed 1" in replay.stdout
    quarantine = await bus.queue(bus.names.invalid)
    assert (await bus.get(quarantine)).body == b"[first]"
    message = await bus.get(quarantine)
    assert message.body == b"[not an event]"
    assert message.headers["x-invalid-reason"] == "not_json"
    assert list((spool_dir / "parked").iterdir()) == []


async def run_parked(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service", "parked", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_sigterm_with_a_failing_drain_stops_cleanly(
    bus: BusView, proxy: TcpProxy, spawn_receiver: SpawnReceiver, tmp_path: Path
) -> None:
    receiver, disk = await on_small_disk(spawn_receiver, proxy, tmp_path)
    await spool_events(receiver, proxy, 5)
    disk.fill()
    proxy.refuse(False)
    async with asyncio.timeout(20):
        while not await receiver.metric('relay_spool_drain_failures_total{cause="disk"}'):
            await asyncio.sleep(0.1)
    receiver.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(receiver.process.wait(), 30) == 0
    text = receiver.log.read_text()
    assert "cannot listen" not in text
    assert '"event":"stopped"' in text
