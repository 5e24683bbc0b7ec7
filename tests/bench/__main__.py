"""`make bench`: the ceiling, the receiver, end-to-end latency, workers and memory, in one run.

Prints one table, and writes `results/latest.json` and `results/latest.png`.
Ratios are computed within the run: absolute numbers drift on a shared machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import uvloop

from consumers import Consumer
from consumers.topology import ConsumerQueues, declare_consumer_topology
from service.auth import AuthMethod
from service.bus import BusNames, Receipt, event_message
from service.envelope import parse
from tests.bench.noop import noop
from tests.bench.timed import timed
from tests.receivers import ROOT, base_env, free_port
from tests.support import AMQP_URL, fixture_bodies, open_bus

RESULTS = Path(__file__).parent / "results"
API_KEY = "bench-api-key"
CONCURRENCY = (16, 64, 256)
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
WARMUP = 2.0
E2E_RATE, E2E_SECONDS = 100, 10.0
WORKER_MESSAGES = 10_000
WORKER_ROUNDS = 5
TARGETS = {
    "receiver_vs_ceiling_at_64": 0.70,
    "receiver_p99_ms_at_64": 50.0,
    "e2e_p50_ms": 10.0,
    "worker_vs_raw": 0.80,
    "receiver_rss_mib": 120.0,
}


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = subprocess.run(args, capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    line = [line for line in result.stdout.splitlines() if line.startswith("{")][-1]
    return dict(json.loads(line))


def publishing(module: str, prefix: str) -> dict[str, Any]:
    """The ceiling, or the receiver's publish path alone, from a process of its own."""
    return run_json(sys.executable, "-m", module, AMQP_URL, prefix, str(SECONDS), env=base_env())


def load_point(url: str, connections: int, seconds: float) -> dict[str, Any]:
    """One load point from a separate process: wrk with load.lua, else the built-in generator."""
    if shutil.which("wrk"):
        threads = str(min(2, connections))
        script = str(Path(__file__).parent / "load.lua")
        env = {**os.environ, "BENCH_API_KEY": API_KEY}
        args = [
            "wrk",
            "-t",
            threads,
            "-c",
            str(connections),
            "-d",
            f"{round(seconds)}s",
            "-s",
            script,
            url,
        ]
        return {**run_json(*args, env=env), "generator": "wrk"}
    return {
        **run_json(
            sys.executable,
            "-m",
            "tests.bench.loadgen",
            url,
            API_KEY,
            str(connections),
            str(seconds),
            env=base_env(),
        ),
        "generator": "aiohttp",
    }


CHILDREN: list[asyncio.subprocess.Process] = []


async def start(args: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("w") as stderr:
        child = await asyncio.create_subprocess_exec(
            sys.executable, *args, env=env, stderr=stderr, stdout=stderr, cwd=ROOT
        )
    CHILDREN.append(child)
    return child


async def wait_for(condition: Any, within: float = 60) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.05)


async def ready(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pids() -> list[int]:
    """The local RabbitMQ's Erlang VM processes, if the broker runs on this machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "beam.smp":
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


async def settle(within: float = 30.0) -> None:
    """Wait until a local broker is idle, up to `within` seconds.

    A quorum queue keeps writing and compacting after a load ends; on two shared cores
    that work would be charged to whatever is measured next.
    """
    pids = broker_pids()
    deadline = time.monotonic() + within
    while pids and time.monotonic() < deadline:
        before = sum(cpu_seconds(pid) for pid in pids)
        await asyncio.sleep(1.0)
        if sum(cpu_seconds(pid) for pid in pids) - before < 0.1:
            return


async def serving(
    module: str, prefix: str, workdir: Path
) -> tuple[asyncio.subprocess.Process, str]:
    """Start `python -m module` as a receiver and wait until it is ready; return it and its URL."""
    port = free_port()
    env = base_env(
        AMQP_URL=AMQP_URL,
        BUS_PREFIX=prefix,
        WEBHOOK_API_KEYS=API_KEY,
        HOST="127.0.0.1",
        PORT=str(port),
        LOG_FORMAT="json",
    )
    receiver = await start(["-m", module], env, workdir / f"{module}.log")
    async with asyncio.timeout(30):
        while not await ready(f"http://127.0.0.1:{port}/readyz"):
            await asyncio.sleep(0.1)
    return receiver, f"http://127.0.0.1:{port}"


async def measure(
    receiver: asyncio.subprocess.Process, url: str, connections: int
) -> dict[str, Any]:
    """One load point after a warm-up, with the receiver's CPU time per request."""
    await settle()
    await asyncio.to_thread(load_point, url, connections, WARMUP)
    before = cpu_seconds(receiver.pid)
    point = await asyncio.to_thread(load_point, url, connections, SECONDS)
    point["connections"] = connections
    point["per_second"] = point["requests"] / point["seconds"]
    point["cpu_us"] = (cpu_seconds(receiver.pid) - before) / max(point["requests"], 1) * 1e6
    point["errors"] = point["non200"] + sum(
        point[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    return point


async def receiver_points(prefix: str, workdir: Path) -> tuple[list[dict[str, Any]], float, str]:
    receiver, base = await serving("service", prefix, workdir)
    points = []
    for connections in CONCURRENCY:
        point = await measure(receiver, f"{base}/webhooks/avionte", connections)
        points.append(point)
        print(
            f"  receiver at {connections:3d} connections: {point['per_second']:8.0f}/s", flush=True
        )
    return points, peak_rss_mib(receiver.pid), base


async def stubbed_point(prefix: str, workdir: Path) -> dict[str, Any]:
    """The receiver at 64 connections with publishing stubbed out: the HTTP side alone."""
    receiver, base = await serving("tests.bench.stub_receiver", prefix, workdir)
    try:
        return await measure(receiver, f"{base}/webhooks/avionte", 64)
    finally:
        receiver.terminate()
        await receiver.wait()


async def purge(prefix: str) -> None:
    connection, bus = await open_bus(prefix)
    async with connection:
        await (await bus.queue(bus.names.unrouted)).purge()


async def end_to_end(prefix: str, base: str, workdir: Path) -> dict[str, Any]:
    latencies = workdir / "latencies.txt"
    env = base_env(
        AMQP_URL=AMQP_URL,
        BUS_PREFIX=prefix,
        LOG_LEVEL="warning",
        METRICS_PORT="0",
        BENCH_LATENCIES=str(latencies),
    )
    worker = await start(
        ["-m", "consumers", "run", "tests.bench.timed"], env, workdir / "e2e-worker.log"
    )
    await asyncio.sleep(3)  # declared and consuming
    template = json.loads(fixture_bodies()["placement_updated"])
    url = f"{base}/webhooks/avionte"
    total = int(E2E_RATE * E2E_SECONDS)
    async with aiohttp.ClientSession() as session:
        begun = time.monotonic()
        for index in range(total):
            await asyncio.sleep(max(0.0, begun + index / E2E_RATE - time.monotonic()))
            body = {**template, "CorrelationId": str(uuid.uuid4()), "SentAt": time.time()}
            async with session.post(url, json=body, headers={"X-api-key": API_KEY}) as response:
                assert response.status == 200
    await wait_for(lambda: latencies.exists() and len(latencies.read_text().split()) >= total)
    worker.terminate()
    await worker.wait()
    # Its queue, bound to every event, would otherwise take a copy of the workers' load.
    await remove_queues(prefix, timed)
    values = sorted(float(v) * 1000 for v in latencies.read_text().split())
    cuts = statistics.quantiles(values, n=100)
    return {"messages": len(values), "rate": E2E_RATE, "p50_ms": cuts[49], "p99_ms": cuts[98]}


async def prefill(prefix: str, count: int) -> str:
    """Declare the no-op consumer's queues and fill its queue with `count` events."""
    names = BusNames(prefix)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await declare_consumer_topology(channel, names, noop)
        underlay = await channel.get_underlay_channel()
        body = fixture_bodies()["placement_updated"]
        # Shaped as the receiver shapes them, headers included: the worker decodes those.
        receipt = Receipt(str(uuid.uuid4()), AuthMethod.API_KEY, datetime.now(UTC))
        properties = event_message(names, parse(body), body, receipt).properties
        for start_at in range(0, count, 500):
            await asyncio.gather(
                *(
                    underlay.basic_publish(
                        body,
                        exchange=names.events,
                        routing_key="placement.updated",
                        properties=properties,
                    )
                    for _ in range(min(500, count - start_at))
                )
            )
        return queue.name


async def noop_worker(prefix: str, workdir: Path, level: str) -> dict[str, float]:
    """One worker process drains WORKER_MESSAGES with the no-op handler."""
    await prefill(prefix, WORKER_MESSAGES)
    await settle()
    done = workdir / f"noop-done-{level}.txt"
    done.unlink(missing_ok=True)
    env = base_env(
        AMQP_URL=AMQP_URL,
        BUS_PREFIX=prefix,
        LOG_LEVEL=level,
        METRICS_PORT="0",
        BENCH_COUNT=str(WORKER_MESSAGES),
        BENCH_DONE=str(done),
    )
    worker = await start(
        ["-m", "consumers", "run", "tests.bench.noop"], env, workdir / f"noop-{level}.log"
    )
    await wait_for(done.exists, within=300)
    counted, wall, cpu = (float(value) for value in done.read_text().split())
    rss = peak_rss_mib(worker.pid)
    worker.terminate()
    await worker.wait()
    return {"per_second": counted / wall, "cpu_us": cpu / counted * 1e6, "rss_mib": rss}


async def raw_loop(prefix: str) -> dict[str, float]:
    """The bare aio-pika loop drains WORKER_MESSAGES from the same queue."""
    queue = await prefill(prefix, WORKER_MESSAGES)
    await settle()
    return await asyncio.to_thread(
        run_json,
        sys.executable,
        "-m",
        "tests.bench.raw_consumer",
        AMQP_URL,
        queue,
        str(WORKER_MESSAGES),
        str(noop.concurrency),
    )


async def workers(prefix: str, workdir: Path) -> tuple[dict[str, Any], float]:
    """The worker next to the raw loop: alternated, best of WORKER_ROUNDS each.

    Rounds alternate because the machine's speed drifts. The worker runs at
    LOG_LEVEL=warning, then once more at info, which writes a line per message.
    """
    worker_runs, raw_runs = [], []
    for _ in range(WORKER_ROUNDS):
        raw_runs.append(await raw_loop(prefix))
        worker_runs.append(await noop_worker(prefix, workdir, "warning"))
    logged = await noop_worker(prefix, workdir, "info")
    best_worker = max(worker_runs, key=lambda run: run["per_second"])
    best_raw = max(raw_runs, key=lambda run: run["per_second"])
    result = {
        "worker_per_second": best_worker["per_second"],
        "raw_per_second": best_raw["per_second"],
        "worker_cpu_us": min(run["cpu_us"] for run in worker_runs),
        "raw_cpu_us": min(run["cpu_us"] for run in raw_runs),
        "worker_logged_per_second": logged["per_second"],
        "worker_runs": worker_runs,
        "raw_runs": raw_runs,
    }
    return result, max(run["rss_mib"] for run in [*worker_runs, logged])


async def remove_queues(prefix: str, *consumers: Consumer) -> None:
    """Delete these consumers' queues."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for consumer in consumers:
            queues = ConsumerQueues(prefix, consumer.name)
            for name in (queues.main, queues.dead, queues.bindings):
                await channel.queue_delete(name)
            for delay in consumer.retry_delays:
                await channel.queue_delete(queues.retry(delay))


async def cleanup(prefix: str) -> None:
    """Delete everything the run declared."""
    await remove_queues(prefix, noop, timed)
    connection, bus = await open_bus(prefix)
    async with connection:
        await bus.remove_all()


def table(result: dict[str, Any]) -> str:
    rows = [
        (
            "ceiling (aiormq, confirms)",
            f"{result['ceiling_per_second']:.0f} msg/s",
            f"CPU {result['ceiling_cpu_us']:.0f} us/msg",
        )
    ]
    rows.append(
        (
            "publish path, no HTTP",
            f"{result['publish_path_per_second']:.0f} msg/s",
            f"CPU {result['publish_path_cpu_us']:.0f} us/msg, receiver's publisher and messages",
        )
    )
    stub = result["receiver_stubbed"]
    for point, label in [*((p, "receiver") for p in result["receiver"]), (stub, "publish stubbed")]:
        rows.append(
            (
                f"{label}, {point['connections']} connections",
                f"{point['per_second']:.0f} req/s",
                f"p50 {point['p50_ms']:.1f}  p95 {point['p95_ms']:.1f}"
                f"  p99 {point['p99_ms']:.1f} ms  errors {point['errors']}"
                f"  CPU {point['cpu_us']:.0f} us/req",
            )
        )
    rows.append(
        (
            "one-process bound",
            f"{result['one_process_bound']:.2f} of ceiling",
            "ceiling CPU / (publish stubbed CPU + publish path CPU)",
        )
    )
    e2e = result["end_to_end"]
    rows.append(
        (
            f"end to end at {e2e['rate']}/s",
            f"p50 {e2e['p50_ms']:.1f} ms",
            f"p99 {e2e['p99_ms']:.1f} ms",
        )
    )
    rows.append(
        (
            "worker, no-op handler",
            f"{result['worker_per_second']:.0f} msg/s",
            f"CPU {result['worker_cpu_us']:.0f} us/msg, LOG_LEVEL=warning",
        )
    )
    rows.append(
        (
            "raw aio-pika consume+ack",
            f"{result['raw_per_second']:.0f} msg/s",
            f"CPU {result['raw_cpu_us']:.0f} us/msg",
        )
    )
    rows.append(
        (
            "worker, a log line per message",
            f"{result['worker_logged_per_second']:.0f} msg/s",
            "LOG_LEVEL=info",
        )
    )
    rows.append(
        (
            "peak RSS",
            f"receiver {result['receiver_rss_mib']:.0f} MiB",
            f"worker {result['worker_rss_mib']:.0f} MiB",
        )
    )
    lines = [f"{a:<32} {b:<22} {c}" for a, b, c in rows]
    lines.append("")
    for name, (value, target, met) in result["targets"].items():
        lines.append(f"{name:<32} {value:<22.3g} target {target:g}: {'met' if met else 'NOT met'}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    points = result["receiver"]
    x = [p["connections"] for p in points]
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(x, [p["per_second"] for p in points], "o-", color="tab:blue", label="req/s")
    left.axhline(result["ceiling_per_second"], color="tab:blue", ls=":", label="ceiling msg/s")
    left.set_xscale("log", base=2)
    left.set_xlabel("concurrent connections")
    left.set_ylabel("requests per second", color="tab:blue")
    right = left.twinx()
    right.plot(x, [p["p99_ms"] for p in points], "s--", color="tab:red", label="p99 ms")
    right.set_ylabel("p99 latency (ms)", color="tab:red")
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    fig.legend(loc="center right", bbox_to_anchor=(0.85, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


async def main() -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        print("ceiling ...", flush=True)
        await settle()
        top = await asyncio.to_thread(publishing, "tests.bench.ceiling", prefix)
        print("publish path ...", flush=True)
        await settle()
        path = await asyncio.to_thread(publishing, "tests.bench.publish_path", prefix)
        await purge(prefix)
        print("receiver ...", flush=True)
        points, receiver_rss, base = await receiver_points(prefix, workdir)
        await purge(prefix)
        print("receiver with publishing stubbed ...", flush=True)
        stubbed = await stubbed_point(prefix, workdir)
        print("end to end ...", flush=True)
        e2e = await end_to_end(prefix, base, workdir)
        print("workers ...", flush=True)
        worker, worker_rss = await workers(prefix, workdir)
    finally:
        # Children first: a worker still running would declare its queues again.
        for child in CHILDREN:
            if child.returncode is None:
                child.terminate()
                await child.wait()
        await cleanup(prefix)
    at64 = next(p for p in points if p["connections"] == 64)
    values = {
        "receiver_vs_ceiling_at_64": at64["per_second"] / top["per_second"],
        "receiver_p99_ms_at_64": at64["p99_ms"],
        "e2e_p50_ms": e2e["p50_ms"],
        "worker_vs_raw": worker["worker_per_second"] / worker["raw_per_second"],
        "receiver_rss_mib": receiver_rss,
    }
    higher_is_better = {"receiver_vs_ceiling_at_64", "worker_vs_raw"}
    result = {
        "ceiling_per_second": top["per_second"],
        "ceiling_cpu_us": top["cpu_us"],
        "receiver": points,
        "receiver_stubbed": stubbed,
        "publish_path_per_second": path["per_second"],
        "publish_path_cpu_us": path["cpu_us"],
        # The receiver's best case: its HTTP side and its publish path cost no more
        # together than apart, and a core does nothing else.
        "one_process_bound": top["cpu_us"] / (stubbed["cpu_us"] + path["cpu_us"]),
        "end_to_end": e2e,
        **worker,
        "receiver_rss_mib": receiver_rss,
        "worker_rss_mib": worker_rss,
        "targets": {
            name: (
                value,
                TARGETS[name],
                value >= TARGETS[name] if name in higher_is_better else value <= TARGETS[name],
            )
            for name, value in values.items()
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2))
    plotted = plot(result, RESULTS / "latest.png")
    print()
    print(table(result))
    print(
        f"\nwrote {RESULTS / 'latest.json'}" + (f" and {RESULTS / 'latest.png'}" if plotted else "")
    )


if __name__ == "__main__":
    uvloop.run(main())
