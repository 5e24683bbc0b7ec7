"""Fault injection: 2,000 deliveries at 50 connections through each failure, and nothing lost.

Each scenario prints one line: sent, final 200s, deliveries given up by the sender,
other final answers, delivered, duplicates and lost; then every answer on the way. A
real worker process counts deliveries by message id.

On a slow or shared machine a fault can outlast the sender's retries, so the checks
are these. Nothing answered `200` may be lost, and no answer, on the way or final, may
be a status other than `200` or `503`. A delivery whose every attempt failed with a
`503`, a timeout or a dropped connection was given up by the sender: never accepted, so
never lost; it is counted apart, and each scenario says when one may happen. What a
scenario proves about its fault is checked by order rather than by totals: what was
accepted while the fault lasted, and that every delivery tried after it ended was
accepted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest

from consumers.topology import ConsumerQueues, declare_consumer_topology
from service.http.app import WEBHOOK_PATH
from service.shared.bus import BusNames
from tests.faults.harness import Harness, Process
from tests.faults.load import Load, deliveries, retryable, run_load
from tests.support import AMQP_URL, BusView
from tests.tools.nodes import Cluster, Node
from tests.tools.small_fs import SmallFilesystem, in_small_filesystem
from tests.tools.tcp_proxy import TcpProxy, proxy_to
from tests.worker_processes import start_consumers, start_worker
from tests.workers.failures import fail_once

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
    gave_up: int
    other: int
    delivered: int
    duplicates: int
    lost: int
    seconds: float

    def line(self) -> str:
        return (
            f"{self.scenario:<28} sent {self.sent:5d}  200 {self.ok:5d}  gave up {self.gave_up:4d}"
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
    given_up = load.given_up
    report = Report(
        scenario=name,
        sent=len(load.final),
        ok=len(accepted),
        gave_up=len(given_up),
        other=len(load.refused),
        delivered=len(ours),
        duplicates=sum(ours.values()) - len(ours),
        lost=len(accepted - set(ours)),
        seconds=time.monotonic() - started,
    )
    answers = load.answers
    gave_up_after = f"; gave up after: {dict(Counter(given_up.values()))}" if given_up else ""
    print(f"\nFAULTS {report.line()}", flush=True)
    print(f"FAULTS   answers on the way: {dict(answers)}{gave_up_after}", flush=True)
    assert report.sent == TOTAL
    assert report.lost == 0
    # A 500 or a 4xx is a defect, on the way or at the end; a 503 or no answer is not.
    assert [answer for answer in answers if answer != 200 and not retryable(answer)] == []
    assert report.other == 0
    return report


def spool_hid_it(load: Load, *receivers: Process) -> None:
    """With a spool, the fault is invisible to the sender.

    No delivery was refused: a receiver with a spool answers 503 only when the spool
    cannot write, which no scenario but the full disk allows. An attempt that got no
    answer at all (a timeout or a dropped connection on a loaded machine) is retried
    like any failure, and a delivery given up after those is printed, not failed; so
    the receivers must still be running, for a crash also leaves attempts unanswered.
    """
    assert load.answers[503] == 0
    assert [r.process.returncode for r in receivers] == [None] * len(receivers)


def resumed(load: Load, moment: float, after: str) -> None:
    """Acceptance resumed at `moment`: every delivery tried since then was accepted.

    So a delivery given up made its last attempt before `moment`, while the fault lasted.
    """
    since = load.tried_since(moment)
    failed = Counter(answer for answer in since.values() if answer != 200)
    print(f"FAULTS   tried after {after}: {len(since)}, not accepted: {dict(failed)}", flush=True)
    assert since  # or the check proves nothing
    assert not failed


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
        receiver = await harness.receiver(amqp_url=through)
        load, task, started = start_load(harness)
        await load.until(TOTAL // 4)
        await cut(proxy)
        cut_at = time.monotonic()
        await asyncio.sleep(OUTAGE_SECONDS)
        restored_at = time.monotonic()
        proxy.refuse(False)
        await finish("cut link 10 s", harness, load, task, started)
    spool_hid_it(load, receiver)
    assert load.accepted_within(cut_at, restored_at) > 0  # spooled while the link was down


async def test_cut_link_without_a_spool(harness: Harness) -> None:
    async with proxy_to(AMQP_URL) as (proxy, through):
        await harness.worker()
        await harness.receiver(amqp_url=through, spool=False)
        load, task, started = start_load(harness, retries=())
        await load.until(TOTAL // 4)
        await cut(proxy)
        await asyncio.sleep(OUTAGE_SECONDS)
        proxy.refuse(False)
        await finish("cut link 10 s, no spool", harness, load, task, started)
    # Without retries every 503 is given up at once; and no timeouts, no dropped connections.
    assert set(load.answers) <= {200, 503}
    assert load.answers[503] > 0


async def test_stalled_link(harness: Harness) -> None:
    async with proxy_to(AMQP_URL) as (proxy, through):
        await harness.worker()
        receiver = await harness.receiver(amqp_url=through)
        load, task, started = start_load(harness)
        await load.until(TOTAL // 4)
        proxy.stall()
        stalled_at = time.monotonic()
        await asyncio.sleep(OUTAGE_SECONDS)
        resumed_at = time.monotonic()
        proxy.resume()
        await finish("stalled link 10 s", harness, load, task, started)
    spool_hid_it(load, receiver)
    assert load.accepted_within(stalled_at, resumed_at) > 0  # spooled while no confirm came


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
        cut_at = time.monotonic()
        await load.until(TOTAL // 2)
        stopping_at = time.monotonic()
        assert await receiver.stop(signum) == exit_code
        await harness.receiver(amqp_url=through)  # same port, same spool: it drains
        ready_at = time.monotonic()
        proxy.refuse(False)
        await finish(scenario, harness, load, task, started)
    # Accepted into the first receiver's spool (the link was cut), delivered by the second:
    # none was lost. While neither listened, attempts went unanswered (or, on SIGTERM,
    # got 503); the sender retried them.
    assert load.accepted_within(cut_at, stopping_at) > 0
    resumed(load, ready_at, "the restart")


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
        freed_at = time.monotonic()
        await finish("disk full while spooling", harness, load, task, started)
        async with asyncio.timeout(30):
            while await spooled(harness):
                await asyncio.sleep(0.2)
    met_503 = {cid for cid, tries in load.attempts.items() if any(a.answer == 503 for a in tries)}
    retried_into_200 = len(met_503 & load.accepted)
    print(
        f"FAULTS   {len(met_503)} deliveries met a 503: {retried_into_200} were retried into"
        f" a 200, {len(met_503 & set(load.given_up))} given up",
        flush=True,
    )
    assert met_503  # the full disk was felt
    assert retried_into_200 > 0  # the sender's retries got through
    resumed(load, freed_at, "the disk was freed")  # a give-up gave up on the full disk


async def spooled(harness: Harness) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{harness.url}/readyz") as response,
    ):
        return int((await response.json())["spool"]["records"])


async def test_worker_killed(harness: Harness) -> None:
    worker = await harness.worker()
    receiver = await harness.receiver()
    load, task, started = start_load(harness)
    await load.until(TOTAL // 3)
    await worker.stop(signal.SIGKILL)
    await asyncio.sleep(1)
    await harness.worker()
    await finish("worker SIGKILL", harness, load, task, started)
    spool_hid_it(load, receiver)


async def test_broker_restarted(harness: Harness) -> None:
    broker = Node("faults")
    try:
        await broker.start()
        await harness.worker(amqp_url=broker.url)
        receiver = await harness.receiver(amqp_url=broker.url)
        load, task, started = start_load(harness)
        await load.until(TOTAL // 4)
        await asyncio.to_thread(broker.stop_app)
        stopped_at = time.monotonic()
        await asyncio.sleep(5)
        starting_at = time.monotonic()
        await asyncio.to_thread(broker.start_app)
        await finish("broker stop_app/start_app", harness, load, task, started)
        spool_hid_it(load, receiver)
        assert load.accepted_within(stopped_at, starting_at) > 0  # spooled while it was down
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
        await finish("cluster node lost", harness, load, task, started)
        lost, after = outage(receiver.log)
        moved = connected_port(receiver.log)
        print(
            f"FAULTS   the receiver lost :{node.port} {lost - stopped_at:.2f} s after the stop"
            f" began, and stored on :{moved} {after:.2f} s after that",
            flush=True,
        )
        spool_hid_it(load, receiver)
        assert moved != node.port
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
        await finish("memory alarm 5 s", harness, load, task, started)
        lines = [json.loads(t) for t in receiver.log.read_text().splitlines() if t[:1] == "{"]
        causes = Counter(
            str(line.get("spooled_because")) for line in lines if line.get("stored") == "spool"
        )
        print(f"FAULTS   spooled during the alarm, by cause: {dict(causes)}", flush=True)
        spool_hid_it(load, receiver)
        assert causes["BrokerBlocked"] > 0  # known at once, not after PUBLISH_TIMEOUT each
    finally:
        await harness.close()
        await asyncio.to_thread(broker.shutdown)


async def test_retries_come_back_when_the_main_queues_leader_dies(
    harness: Harness, tmp_path: Path
) -> None:
    """A node failure while retries return must not leave them stuck in the retry queue.

    The queues are declared through another node than the worker's, so that their
    leaders are there; that node is killed while the 300 retries are due back.
    """
    cluster = Cluster(3)
    count = tmp_path / "counted.txt"
    try:
        await cluster.start()
        worker_node, leader_node = cluster.nodes[0], cluster.nodes[1]
        connection = await aio_pika.connect(leader_node.url)
        async with connection:
            channel = await connection.channel()
            names = BusNames(harness.prefix)
            await declare_consumer_topology(channel, names, fail_once.consumer)
            listed = json.loads(
                leader_node.must("list_queues", "name", "leader", "--formatter", "json", "-q")
            )
            main = ConsumerQueues(harness.prefix, "fail-once").main
            assert {q["leader"] for q in listed if q["name"].startswith(main)} == {leader_node.name}
            worker = await start_worker(
                "tests.workers.failures.fail_once",
                tmp_path / "worker.log",
                {
                    "AMQP_URL": worker_node.url,
                    "BUS_PREFIX": harness.prefix,
                    "COUNT_FILE": str(count),
                    "METRICS_PORT": "0",
                    "LOG_FORMAT": "json",
                },
            )
            view = BusView(channel, names)
            sent = [
                await view.publish_event("talent_created", CorrelationId=f"r-{n}")
                for n in range(300)
            ]
            async with asyncio.timeout(30):
                while len(worker.events("handler failed")) < len(sent):
                    await asyncio.sleep(0.1)
        # Every message failed once and waits 2 s for its retry: the leaders go now.
        pid = int((leader_node.base / "pid").read_text())
        os.kill(pid, signal.SIGKILL)
        started = time.monotonic()
        try:
            async with asyncio.timeout(90):
                while len(set(count.read_text().split()) if count.exists() else ()) < len(sent):
                    await asyncio.sleep(0.2)
        except TimeoutError:
            pass  # the line below says how many came back
        back = set(count.read_text().split()) if count.exists() else set()
        print(
            f"\nFAULTS retries after a leader's node died: {len(back & set(sent))} of"
            f" {len(sent)} came back in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        assert back >= set(sent)
        await worker.stop()
    finally:
        await harness.close()
        await asyncio.to_thread(cluster.shutdown)


async def test_a_worker_waits_for_a_registry_replica_on_its_node(tmp_path: Path) -> None:
    """A node without a running replica of the registry refuses its reader: wait, not exit.

    After a node failure a stream's replica on that node restarts for a while; here
    the registry has no replica on the worker's node at all until one is added.
    """
    cluster = Cluster(2)
    names = BusNames(f"replica-{os.getpid()}")
    stream = f"{names.prefix}.registry.log"
    try:
        await cluster.start()
        holder, reader = cluster.nodes
        async with await aio_pika.connect(holder.url) as connection:
            channel = await connection.channel()
            await channel.declare_queue(
                stream,
                durable=True,
                arguments={"x-queue-type": "stream", "x-initial-cluster-size": 1},
            )
        members = json.loads(
            holder.must("list_queues", "name", "members", "--formatter", "json", "-q")
        )
        assert [q["members"] for q in members if q["name"] == stream] == [[holder.name]]
        env = {
            "AMQP_URL": reader.url,
            "BUS_PREFIX": names.prefix,
            "RECORD_FILE": str(tmp_path / "record.jsonl"),
            "METRICS_PORT": "0",
            "LOG_FORMAT": "json",
        }
        worker = await start_consumers(
            ["run", "tests.workers.recorder"],
            tmp_path / "worker.log",
            env,
            "worker start failed; retrying",
            "worker",
        )
        await asyncio.sleep(3)
        assert worker.process.returncode is None  # still there, and still waiting
        refused = worker.events("worker start failed; retrying")
        assert refused[0]["error_type"] == "NoLocalReplica"
        assert "does not have a replica on the local node" in refused[0]["error"]
        assert not worker.events("worker started")
        await asyncio.to_thread(holder.streams, "add_replica", stream, reader.name)
        async with asyncio.timeout(60):
            while not worker.events("worker started"):
                assert worker.process.returncode is None, worker.text()
                await asyncio.sleep(0.2)
        assert await worker.stop() == 0
    finally:
        await asyncio.to_thread(cluster.shutdown)
