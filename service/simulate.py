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
import random
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from tqdm import tqdm

KNOWN_EVENTS = (
    "talent_created", "talent_saved", "talent_merged", "talent_submitted", "talent_login_created",
    "contact_created", "contact_updated",
    "company_updated", "company_address_created", "company_address_updated", "company_tag_added",
    "company_tag_deleted", "company_statuses_updated",
    "branch_created",
    "job_created", "job_updated", "job_discount_updated", "VMS_job_created", "VMS_job_declined",
    "placement_started", "placement_updated", "placement_extension_deleted",
    "placement_end_reasons_updated",
    "skillpositions_saved",
)  # fmt: skip
# A generated event's ids, where Avionté shows them: its samples (tests/fixtures/avionte),
# and its note that VMS_job_created carries JobId. Any other known event carries its
# entity's `<Kind>Id`, like the documented `{"PlacementId":86635, ...}`.
# `consumers.avionte` reads the same fields.
SHOWN_IDS: dict[str, tuple[str, ...]] = {
    "talent_created": ("Id",),
    "talent_merged": ("GoodTalentId", "BadTalentId"),
    "contact_updated": ("Id",),
    "company_updated": ("Id",),
    "company_address_created": ("CompanyId", "AddressId"),
    "placement_started": ("PlacementId", "PlacementExtensionId", "JobId"),
    "placement_updated": ("PlacementId", "PlacementExtensionId"),
    "VMS_job_created": ("JobId",),
    "VMS_job_declined": ("JobId",),
}
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


def resource_ids(event_name: str) -> tuple[str, ...]:
    """The id fields a generated `event_name` carries in its Resource."""
    if event_name in SHOWN_IDS:
        return SHOWN_IDS[event_name]
    if event_name in KNOWN_EVENTS:
        return (f"{event_name.split('_')[0].capitalize()}Id",)
    return ("Id",)


def bodies(events: Sequence[str] | None, fixtures: Path | None) -> Iterator[bytes]:
    """Endless deliveries, each with a fresh CorrelationId: the fixtures, or generated events."""
    if not events:
        assert fixtures is not None
        templates = [json.loads(path.read_bytes()) for path in sorted(fixtures.glob("*.json"))]
        if not templates:
            raise ValueError(f"no *.json fixtures in {fixtures}")
        for template in itertools.cycle(templates):
            yield json.dumps({**template, "CorrelationId": str(uuid.uuid4())}).encode()
    for name in itertools.cycle(events or ()):
        correlation_id = str(uuid.uuid4())
        ids = {field: random.randint(1, 10**6) for field in resource_ids(name)}  # noqa: S311
        resource = {**ids, "CorrelationId": correlation_id}
        yield json.dumps(
            {
                "EventName": name,
                "FrontOfficeTenantId": 1,
                "Resource": json.dumps(resource),
                "ResourceModelType": "Avionte.Commons.CompasEventModel.ResourceModel",
                "CorrelationId": correlation_id,
            }
        ).encode()


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
