"""A bounded load of Avionté deliveries, with Avionté's habit of retrying failures.

A `503`, a timeout or a dropped connection is a failure Avionté retries. A delivery
whose every attempt failed is "given up by the sender": never accepted, so never lost.
Any other answer that is not `200` is a defect of the receiver.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from service.simulate import RETRY_SCHEDULE
from tests.support import API_KEYS, fixture_bodies

# Avionté retries a failure at once, again after a minute, and at once again, then gives
# up (`service.simulate`). Here its minute lasts MINUTE seconds, twice the faults the
# sender is meant to feel (a full disk for 5 s, a receiver restart): a delivery is given
# up only when the receiver stays unable for that long. Each scenario a sender feels
# takes about MINUTE seconds longer for it, since a sender waits out its retries.
MINUTE = 10.0
RETRY_DELAYS = tuple(wait * MINUTE for wait in RETRY_SCHEDULE)

Answer = int | str  # the HTTP status, or the name of the error when no answer came


def retryable(answer: Answer) -> bool:
    """A failure Avionté retries and an honest receiver may give: 503, or no answer."""
    return answer == 503 or isinstance(answer, str)


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


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of a delivery: when it began and ended (`time.monotonic()`), and the answer."""

    began: float
    ended: float
    answer: Answer


@dataclass
class Load:
    """What happened to each delivery: every attempt, and its final answer once it has one."""

    attempts: dict[str, list[Attempt]] = field(default_factory=dict)
    final: dict[str, Answer] = field(default_factory=dict)
    done: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, count: int) -> None:
        """Wait until `count` deliveries have their final answer."""
        while self.done < count:
            self.progress.clear()
            await self.progress.wait()

    @property
    def answers(self) -> Counter[Answer]:
        """Every answer on the way, final or not."""
        return Counter(a.answer for tries in self.attempts.values() for a in tries)

    @property
    def accepted(self) -> set[str]:
        return {cid for cid, answer in self.final.items() if answer == 200}

    @property
    def given_up(self) -> dict[str, Answer]:
        """Deliveries whose every attempt failed retryably, with the last failure."""
        return {
            cid: answer for cid, answer in self.final.items() if answer != 200 and retryable(answer)
        }

    @property
    def refused(self) -> dict[str, Answer]:
        """Final answers that are neither 200 nor a failure Avionté retries: defects."""
        return {
            cid: answer
            for cid, answer in self.final.items()
            if answer != 200 and not retryable(answer)
        }

    def tried_since(self, moment: float) -> dict[str, Answer]:
        """The final answer of every delivery with an attempt begun at `moment` or later."""
        return {
            cid: self.final[cid]
            for cid, tries in self.attempts.items()
            if cid in self.final and tries[-1].began >= moment
        }

    def accepted_within(self, start: float, end: float) -> int:
        """Attempts begun at `start` or later and answered 200 by `end`."""
        return sum(
            1
            for tries in self.attempts.values()
            for a in tries
            if a.answer == 200 and a.began >= start and a.ended <= end
        )


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
            tries = load.attempts.setdefault(cid, [])
            for delay in (*retries, None):
                began = time.monotonic()
                answer: Answer
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        answer = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    answer = type(exc).__name__
                tries.append(Attempt(began, time.monotonic(), answer))
                if answer == 200 or delay is None:
                    break
                await asyncio.sleep(delay)
            load.final[cid] = tries[-1].answer
            load.done += 1
            load.progress.set()

    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(sender(session) for _ in range(connections)))
