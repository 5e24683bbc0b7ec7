"""Fault injection: 2,000 deliveries at 50 connections through each failure, and nothing lost.

Each scenario prints one line: sent, final 200s, final 503s, other failures, delivered,
duplicates and lost. A real worker process counts deliveries by message id.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.http.app import WEBHOOK_PATH
from tests.faults.harness import Harness
from tests.faults.load import Load, deliveries, run_load
from tests.nodes import Cluster, Node
from tests.small_fs import SmallFilesystem, in_small_filesystem
from tests.support import AMQP_URL
from tests.tcp_proxy import TcpProxy, proxy_to

pytestmark = [pytest.mark.faults, pytest.mark.rabbit, pytest.mark.timeout(240)]

TOTAL = 2000
CONNECTIONS = 50
OUTAGE_SECONDS = 10
# Small, so that filling it is quick; the scenario fills it on purpose mid-outage.
SPOOL_DISK = 4 << 20


@dataclass(frozen=True)
class Report:
    scenario: str
    sent: int
    ok: int
    unavailable: int
    other: int
    delivered: int
    duplicates: int
    lost: int
    seconds: float

    def line(self) -> str:
        return (
            f"{self.scenario:<28} sent {self.sent:5d}  200 {self.ok:5d}  503 {self.unavailable:4d}"
            f"  other {self.other:4d}  delivered {self.delivered:5d}"
            f"  duplicates {self.duplicates:4d}  lost {self.lost}  ({self.seconds:.1f} s)"
        )


async def finish(
    name: str, harness: Harness, load: Load, task: asyncio.Task[None], started: float
) -> Report:
    """Wait for the load and for every accepted delivery to be counted; print and check."""
    await task
    accepted = load.accepted
    try:
        async with asyncio.timeout(120):
            while not accepted <= set(harness.counted()):
                await asyncio.sleep(0.2)
    except TimeoutError:
        pass  # the report below says what is missing
    await asyncio.sleep(1.0)  # late duplicates
    counted = harness.counted()
    sent_ids = set(load.final)
    ours = Counter({cid: n for cid, n in counted.items() if cid in sent_ids})
    finals = Counter(load.final.values())
    report = Report(
        scenario=name,
        sent=len(load.final),
        ok=finals[200],
        unavailable=finals[503],
        other=sum(n for outcome, n in finals.items() if outcome not in (200, 503)),
        delivered=len(ours),
        duplicates=sum(ours.values()) - len(ours),
        lost=len(accepted - set(ours)),
        seconds=time.monotonic() - started,
    )
    print(f"\nFAULTS {report.line()}", flush=True)
    assert report.sent == TOTAL
    assert report.lost == 0
    return report


async def cut(proxy: TcpProxy) -> None:
    """Break the link to the broker and keep it broken until `proxy.refuse(False)`."""
    proxy.refuse(True)
    await proxy.cut()


def start_load(harness: Harness, **options: object) -> tuple[Load, asyncio.Task[None], float]:
    load = Load()
    url = harness.url + WEBHOOK_PATH
    task = asyncio.create_task(
        run_load(url, deliveries(TOTAL), load, connections=CONNECTIONS, **options)  # type: ignore[arg-type]
    )
    return load, task, time.monotonic()


async def test_cut_link(harness: Harness) -> None:
    async with proxy_to(AMQP_URL) as (proxy, through):
        await harness.worker()
        await harness.receiver(amqp_url=through)
        load, task, started = start_load(harness)
        await load.until(TOTAL // 4)
        await cut(proxy)
        await asyncio.sleep(OUTAGE_SECONDS)
        proxy.refuse(False)
        report = await finish("cut link 10 s", harness, load, task, started)
    assert report.ok == TOTAL


async def test_cut_link_without_a_spool(harness: Harness) -> None:
    async with proxy_to(AMQP_URL) as (proxy, through):
        await harness.worker()
        await harness.receiver(amqp_url=through, spool=False)
        load, task, started = start_load(harness, retries=())
        await load.until(TOTAL // 4)
        await cut(proxy)
        await asyncio.sleep(OUTAGE_SECONDS)
        proxy.refuse(False)
        report = await finish("cut link 10 s, no spool", harness, load, task, started)
    assert set(load.answers) <= {200, 503}
    assert report.unavailable > 0


async def test_stalled_link(harness: Harness) -> None:
    async with proxy_to(AMQP_URL) as (proxy, through):
        await harness.worker()
        await harness.receiver(amqp_url=through)
        load, task, started = start_load(harness)
        await load.until(TOTAL // 4)
        proxy.stall()
        await asyncio.sleep(OUTAGE_SECONDS)
        proxy.resume()
        report = await finish("stalled link 10 s", harness, load, task, started)
    assert report.ok == TOTAL


@pytest.mark.parametrize(
    ("signum", "exit_code", "scenario"),
    [
        (signal.SIGKILL, -signal.SIGKILL, "receiver SIGKILL spooling"),
        (signal.SIGTERM, 0, "receiver SIGTERM"),  # a clean exit with records still spooled
    ],
)
async def test_receiver_stopped_while_spooling(
    harness: Harness, signum: int, exit_code: int, scenario: str
) -> None:
    async with proxy_to(AMQP_URL) as (proxy, through):
        await harness.worker()
        receiver = await harness.receiver(amqp_url=through)
        load, task, started = start_load(harness)
        await load.until(TOTAL // 4)
        await cut(proxy)
        await load.until(TOTAL // 2)
        assert await receiver.stop(signum) == exit_code
        await harness.receiver(amqp_url=through)  # same port, same spool: it drains
        proxy.refuse(False)
        report = await finish(scenario, harness, load, task, started)
    assert report.ok == TOTAL


async def test_disk_fills_while_spooling_then_frees(harness: Harness) -> None:
    async with proxy_to(AMQP_URL) as (proxy, through):
        await harness.worker()
        receiver = await harness.receiver(
            amqp_url=through,
            wrap=lambda argv: in_small_filesystem(argv, harness.spool_dir, size=SPOOL_DISK),
        )
        disk = SmallFilesystem(receiver.process.pid, harness.spool_dir)
        load, task, started = start_load(harness)
        await load.until(TOTAL // 4)
        await cut(proxy)
        await load.until(TOTAL // 3)
        disk.fill()  # the spool cannot take more: 503s, which Avionté retries
        await asyncio.sleep(2)
        proxy.refuse(False)  # the drain runs on a full disk: no cursor can be saved
        await asyncio.sleep(3)
        disk.free()
        report = await finish("disk full while spooling", harness, load, task, started)
        async with asyncio.timeout(30):
            while await spooled(harness):
                await asyncio.sleep(0.2)
    print(f"FAULTS   answers on the way: {dict(load.answers)}", flush=True)
    assert load.answers[503] > 0  # the full disk was felt
    assert report.unavailable == 0  # and every 503 was retried into a 200


async def spooled(harness: Harness) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{harness.url}/readyz") as response,
    ):
        return int((await response.json())["spool"]["records"])


async def test_worker_killed(harness: Harness) -> None:
    worker = await harness.worker()
    await harness.receiver()
    load, task, started = start_load(harness)
    await load.until(TOTAL // 3)
    await worker.stop(signal.SIGKILL)
    await asyncio.sleep(1)
    await harness.worker()
    report = await finish("worker SIGKILL", harness, load, task, started)
    assert report.ok == TOTAL


async def test_broker_restarted(harness: Harness) -> None:
    broker = Node("faults")
    try:
        await broker.start()
        await harness.worker(amqp_url=broker.url)
        await harness.receiver(amqp_url=broker.url)
        load, task, started = start_load(harness)
        await load.until(TOTAL // 4)
        await asyncio.to_thread(broker.stop_app)
        await asyncio.sleep(5)
        await asyncio.to_thread(broker.start_app)
        report = await finish("broker stop_app/start_app", harness, load, task, started)
        assert report.ok == TOTAL
    finally:
        await harness.close()
        await asyncio.to_thread(broker.shutdown)


def connected_port(log: Path) -> int:
    """The port of the node the receiver last connected to, from its log."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    last = [line for line in lines if line.get("event") == "broker connected"][-1]
    return int(str(last["broker"]).rsplit(":", 1)[1].strip("/"))


def outage(log: Path) -> tuple[float, float]:
    """When the receiver lost its broker (epoch), and how long until it stored on one again."""
    lines = [json.loads(text) for text in log.read_text().splitlines() if text.startswith("{")]
    lost = next(_epoch(line) for line in lines if line.get("event") == "broker connection lost")
    for line in lines:
        stored = line.get("event") == "delivery" and line.get("stored") == "broker"
        if stored and _epoch(line) > lost:
            return lost, _epoch(line) - lost
    raise AssertionError("the receiver never stored on the broker again")


def _epoch(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["timestamp"]).timestamp()


async def test_cluster_node_lost(harness: Harness) -> None:
    cluster = Cluster(3)
    try:
        await cluster.start()
        await harness.worker(amqp_url=cluster.url)
        receiver = await harness.receiver(amqp_url=cluster.url)
        queue = f"{harness.prefix}.counter"
        listed = json.loads(
            cluster.nodes[0].must("list_queues", "name", "members", "--formatter", "json", "-q")
        )
        [members] = [q["members"] for q in listed if q["name"] == queue]
        assert len(members) == 3  # replicated on every node
        load, task, started = start_load(harness)
        await load.until(TOTAL // 4)
        node = cluster.by_port(connected_port(receiver.log))
        stopped_at = time.time()
        await asyncio.to_thread(node.shutdown)  # the receiver's node goes away, VM and all
        report = await finish("cluster node lost", harness, load, task, started)
        lost, after = outage(receiver.log)
        moved = connected_port(receiver.log)
        print(
            f"FAULTS   the receiver lost :{node.port} {lost - stopped_at:.2f} s after the stop"
            f" began, and stored on :{moved} {after:.2f} s after that;"
            f" answers on the way: {dict(load.answers)}",
            flush=True,
        )
        assert moved != node.port
        assert report.ok == TOTAL
    finally:
        await harness.close()
        await asyncio.to_thread(cluster.shutdown)


async def test_memory_alarm(harness: Harness) -> None:
    broker = Node("alarm")
    try:
        await broker.start()
        await harness.worker(amqp_url=broker.url)
        receiver = await harness.receiver(amqp_url=broker.url)
        load, task, started = start_load(harness)
        await load.until(TOTAL // 4)
        await asyncio.to_thread(broker.memory_alarm, True)
        await asyncio.sleep(OUTAGE_SECONDS / 2)
        await asyncio.to_thread(broker.memory_alarm, False)
        report = await finish("memory alarm 5 s", harness, load, task, started)
        lines = [json.loads(t) for t in receiver.log.read_text().splitlines() if t[:1] == "{"]
        causes = Counter(
            str(line.get("spooled_because")) for line in lines if line.get("stored") == "spool"
        )
        print(f"FAULTS   spooled during the alarm, by cause: {dict(causes)}", flush=True)
        assert causes["BrokerBlocked"] > 0  # known at once, not after PUBLISH_TIMEOUT each
        assert report.ok == TOTAL
    finally:
        await harness.close()
        await asyncio.to_thread(broker.shutdown)
