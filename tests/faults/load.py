"""A bounded load of Avionté deliveries, with Avionté's habit of retrying failures."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from tests.support import API_KEYS, fixture_bodies

# Avionté retries a failure three times within about a minute; shortened for tests.
RETRY_DELAYS = (0.5, 1.0, 2.0)


def deliveries(count: int) -> list[tuple[str, bytes]]:
    """`count` fixture bodies, cycling through every fixture, each with a fresh CorrelationId."""
    templates = [json.loads(body) for body in fixture_bodies().values()]
    made = []
    for template in itertools.islice(itertools.cycle(templates), count):
        correlation_id = str(uuid.uuid4())
        made.append(
            (correlation_id, json.dumps({**template, "CorrelationId": correlation_id}).encode())
        )
    return made


@dataclass
class Load:
    """What happened to each delivery: its final answer, and every answer on the way."""

    final: dict[str, int | str] = field(default_factory=dict)
    answers: Counter[int | str] = field(default_factory=Counter)
    done: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, count: int) -> None:
        """Wait until `count` deliveries have their final answer."""
        while self.done < count:
            self.progress.clear()
            await self.progress.wait()

    @property
    def accepted(self) -> set[str]:
        return {cid for cid, outcome in self.final.items() if outcome == 200}


async def run_load(
    url: str,
    items: list[tuple[str, bytes]],
    load: Load,
    *,
    connections: int = 50,
    rate: float = 250.0,
    retries: tuple[float, ...] = RETRY_DELAYS,
) -> None:
    """Send every item from `connections` concurrent connections, paced at `rate` per second."""
    queue: asyncio.Queue[tuple[int, str, bytes]] = asyncio.Queue()
    for index, (cid, body) in enumerate(items):
        queue.put_nowait((index, cid, body))
    started = time.monotonic()
    headers = {"X-api-key": API_KEYS[0], "Content-Type": "application/json"}

    async def sender(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            index, cid, body = queue.get_nowait()
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
            outcome: int | str = "never sent"
            for delay in (*retries, None):
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        outcome = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    outcome = type(exc).__name__
                load.answers[outcome] += 1
                if outcome == 200 or delay is None:
                    break
                await asyncio.sleep(delay)
            load.final[cid] = outcome
            load.done += 1
            load.progress.set()

    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(sender(session) for _ in range(connections)))
