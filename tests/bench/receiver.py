"""The receiver's phases of the benchmark: load points, the stubbed receiver, end to end."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from tests.bench.processes import (
    children_cpu_seconds,
    cpu_seconds,
    peak_rss_mib,
    run_json,
    settle,
    start,
    wait_for,
)
from tests.bench.timed import timed
from tests.bench.workers import remove_queues
from tests.receivers import base_env, free_port
from tests.support import AMQP_URL, fixture_bodies, open_bus

API_KEY = "bench-api-key"


CONCURRENCY = (16, 64, 256)


SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))


WARMUP = 2.0
# A point of the alternated rounds (ours against the naive receiver, tracing): shorter,
# so that more rounds fit. Round to round, this machine's speed moves by more than the
# differences these rounds measure.
ROUND_SECONDS = 6.0


E2E_RATE, E2E_SECONDS = 100, 10.0


def load_point(url: str, connections: int, seconds: float, same: bool = False) -> dict[str, Any]:
    """One load point from a separate process: wrk with load.lua, else the built-in generator.

    With `same`, every request is the same delivery (wrk only).
    """
    if shutil.which("wrk"):
        threads = str(min(2, connections))
        script = str(Path(__file__).parent / "load.lua")
        env = {**os.environ, "BENCH_API_KEY": API_KEY, **({"BENCH_SAME": "1"} if same else {})}
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


async def ready(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def serving(
    module: str, prefix: str, workdir: Path, level: str = "info", **extra: str
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
        LOG_LEVEL=level,
        **extra,
    )
    receiver = await start(["-m", module], env, workdir / f"{module}-{level}-{port}.log")
    async with asyncio.timeout(30):
        while not await ready(f"http://127.0.0.1:{port}/readyz"):
            await asyncio.sleep(0.1)
    return receiver, f"http://127.0.0.1:{port}"


async def measure(
    receiver: asyncio.subprocess.Process,
    url: str,
    connections: int,
    same: bool = False,
    seconds: float | None = None,
) -> dict[str, Any]:
    """One load point after a warm-up, with the receiver's CPU time per request.

    It lasts `seconds`, or SECONDS when not given.
    """
    await settle()
    await asyncio.to_thread(load_point, url, connections, WARMUP, same)
    before = cpu_seconds(receiver.pid)
    helpers = children_cpu_seconds(receiver.pid)
    point = await asyncio.to_thread(
        load_point, url, connections, SECONDS if seconds is None else seconds, same
    )
    point["connections"] = connections
    point["per_second"] = point["requests"] / point["seconds"]
    point["cpu_us"] = (cpu_seconds(receiver.pid) - before) / max(point["requests"], 1) * 1e6
    # What its own processes (the span exporter's) used meanwhile, counted apart.
    helped = children_cpu_seconds(receiver.pid) - helpers
    point["helper_cpu_us"] = helped / max(point["requests"], 1) * 1e6
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
    receiver, base = await serving("tests.bench.subjects.stub_receiver", prefix, workdir)
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
