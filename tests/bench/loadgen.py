"""A built-in HTTP load generator, used when wrk is not installed.

Usage: python -m tests.bench.loadgen URL API_KEY CONNECTIONS SECONDS
Prints the same JSON line as load.lua does for wrk.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import aiohttp
import uvloop

from tests.support import fixture_bodies


async def main(url: str, api_key: str, connections: int, seconds: float) -> None:
    template = json.loads(fixture_bodies()["placement_updated"])
    latencies: list[float] = []
    non200 = errors = 0
    deadline = time.monotonic() + seconds
    headers = {"X-api-key": api_key, "Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession, index: int) -> None:
        nonlocal non200, errors
        sent = 0
        while time.monotonic() < deadline:
            sent += 1
            body = json.dumps({**template, "CorrelationId": f"gen-{index}-{sent}"}).encode()
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    non200 += response.status != 200
            except aiohttp.ClientError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session, n) for n in range(connections)))
    elapsed = time.monotonic() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    print(
        json.dumps(
            {
                "requests": len(latencies) + errors,
                "seconds": elapsed,
                "non200": non200,
                "connect_errors": errors,
                "read_errors": 0,
                "write_errors": 0,
                "timeouts": 0,
                "p50_ms": cuts[49] * 1000,
                "p95_ms": cuts[94] * 1000,
                "p99_ms": cuts[98] * 1000,
            }
        )
    )


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
