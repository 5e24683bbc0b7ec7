"""Avionté's side: each delivery posted once, and sent again three more times on a failure.

A `503`, a timeout or a dropped connection is a failure Avionté retries; a retry goes
to the other receiver, as a load balancer in front of two would send it. A delivery
whose every attempt failed is "given up by the sender": never accepted, so never lost.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from service.http.app import WEBHOOK_PATH
from service.simulate import RETRY_SCHEDULE
from tests.chaos.plan import Delivery
from tests.support import API_KEYS, fixture_bodies

# Avionté retries at once, after a minute, and at once again (`service.simulate`); here
# its minute lasts MINUTE seconds, twice the longest fault the run injects.
MINUTE = 20.0
RETRY_DELAYS = tuple(wait * MINUTE for wait in RETRY_SCHEDULE)
ATTEMPT_TIMEOUT = 10.0
RETRYABLE = {503, "timeout", "dropped"}


@dataclass
class Outcomes:
    """Every answer the sender met, and each delivery's last one."""

    final: dict[str, int | str] = field(default_factory=dict)
    answers: Counter[int | str] = field(default_factory=Counter)

    @property
    def accepted(self) -> set[str]:
        return {cid for cid, answer in self.final.items() if answer == 200}

    @property
    def given_up(self) -> set[str]:
        return {cid for cid, answer in self.final.items() if answer in RETRYABLE}

    @property
    def refused(self) -> dict[str, int | str]:
        """Final answers that are neither 200 nor a failure Avionté retries: defects."""
        return {
            cid: answer
            for cid, answer in self.final.items()
            if answer != 200 and answer not in RETRYABLE
        }


def body_of(delivery: Delivery) -> bytes:
    template = json.loads(fixture_bodies()[delivery.kind])
    template["CorrelationId"] = delivery.correlation_id
    template["FrontOfficeTenantId"] = delivery.tenant
    return json.dumps(template).encode()


async def send_all(urls: list[str], deliveries: tuple[Delivery, ...], out: Outcomes) -> None:
    """Post every delivery at its planned time (from now); return when each has its answer."""
    started = time.monotonic()
    headers = {"X-api-key": API_KEYS[0], "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=200, force_close=False)

    async def send(session: aiohttp.ClientSession, delivery: Delivery) -> None:
        await asyncio.sleep(max(0.0, started + delivery.at - time.monotonic()))
        body = body_of(delivery)
        answer: int | str = "never sent"
        for attempt, delay in enumerate((*RETRY_DELAYS, None)):
            url = urls[(delivery.receiver + attempt) % len(urls)] + WEBHOOK_PATH
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    answer = response.status
            except TimeoutError:
                answer = "timeout"
            except aiohttp.ClientError:
                answer = "dropped"
            out.answers[answer] += 1
            if answer not in RETRYABLE or delay is None:
                break
            await asyncio.sleep(delay)
        out.final[delivery.correlation_id] = answer

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(send(session, delivery) for delivery in deliveries))
