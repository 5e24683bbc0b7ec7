"""`python -m service simulate`: Avionté-shaped deliveries to a receiver, retried as Avionté does.

Avionté answers a failure with one immediate retry, another after a minute and a last
immediate one, then gives up. `--minute` shortens that minute for tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from tqdm import tqdm

from service.shared.samples import encoded, made_up_event

# Seconds before each retry, in minutes: at once, after a minute, at once; then give up.
RETRY_SCHEDULE = (0.0, 1.0, 0.0)


@dataclass(frozen=True)
class Credential:
    """How deliveries authenticate: an API key, a plain shared secret, or its HMAC."""

    api_key: str | None = None
    secret: str | None = None
    sign: bool = False

    def headers(self, body: bytes) -> dict[str, str]:
        if self.api_key is not None:
            return {"X-api-key": self.api_key}
        assert self.secret is not None
        if self.sign:
            digest = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            return {"X-Payload-Signature": f"sha256={digest}"}
        return {"X-Payload-Signature": self.secret}


@dataclass
class Summary:
    """What a simulation did."""

    sent: int = 0
    accepted: int = 0
    retried: int = 0
    given_up: int = 0
    latencies: list[float] = field(default_factory=list)

    def percentile(self, q: int) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else 0.0
        return statistics.quantiles(self.latencies, n=100)[q - 1]

    def report(self) -> str:
        return (
            f"sent {self.sent}  accepted {self.accepted}  retried {self.retried}"
            f"  given up {self.given_up}\n"
            f"latency p50 {self.percentile(50) * 1000:.1f} ms  p95 {self.percentile(95) * 1000:.1f}"
            f" ms  p99 {self.percentile(99) * 1000:.1f} ms"
        )


def bodies(events: Sequence[str] | None, fixtures: Path | None) -> Iterator[bytes]:
    """Endless deliveries, each with a fresh CorrelationId: the fixtures, or generated events."""
    if not events:
        assert fixtures is not None
        templates = [json.loads(path.read_bytes()) for path in sorted(fixtures.glob("*.json"))]
        if not templates:
            raise ValueError(f"no *.json fixtures in {fixtures}")
        for template in itertools.cycle(templates):
            yield encoded({**template, "CorrelationId": str(uuid.uuid4())})
    for name in itertools.cycle(events or ()):
        yield encoded(made_up_event(name))


async def _deliver(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    credential: Credential,
    minute: float,
    summary: Summary,
) -> None:
    headers = {"Content-Type": "application/json", **credential.headers(body)}
    for attempt, wait in enumerate((*RETRY_SCHEDULE, None), start=1):
        started = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as response:
                ok = 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        summary.latencies.append(time.perf_counter() - started)
        if ok:
            summary.accepted += 1
            summary.retried += attempt > 1
            return
        if wait is None:
            summary.given_up += 1
            summary.retried += 1
            return
        await asyncio.sleep(wait * minute)


async def simulate(
    url: str,
    credential: Credential,
    *,
    count: int,
    rate: float,
    events: Sequence[str] | None = None,
    fixtures: Path | None = None,
    minute: float = 60.0,
    progress: bool = True,
) -> Summary:
    """Send `count` deliveries at `rate` per second and wait for each to end."""
    summary = Summary()
    source = bodies(events, fixtures)
    timeout = aiohttp.ClientTimeout(total=30)
    with tqdm(total=count, unit="delivery", disable=not progress) as bar:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks = []
            started = time.monotonic()
            for index in range(count):
                await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
                summary.sent += 1
                task = asyncio.create_task(
                    _deliver(session, url, next(source), credential, minute, summary)
                )
                task.add_done_callback(lambda _: bar.update())
                tasks.append(task)
            await asyncio.gather(*tasks)
    return summary
