"""The receiver's publish path alone: its publisher and its messages, without HTTP.

Usage: python -m tests.bench.publish_path AMQP_URL PREFIX SECONDS
Builds each message as the receiver does (its own id, receipt and headers) and
publishes it through `AmqpPublisher`, IN_FLIGHT at a time, as 64 connections would.
With no consumer bound, messages land in the unrouted queue, as the receiver's do
in the benchmark. Prints one JSON line: messages confirmed per second, and the
process's CPU time per message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
import uuid
from datetime import UTC, datetime

import uvloop

from service.observability.logs import configure_logging
from service.publishing.publisher import AmqpPublisher
from service.shared.bus import AuthMethod, BusNames, Receipt, event_message
from service.shared.envelope import parse
from tests.support import fixture_bodies

IN_FLIGHT = 64


async def main(url: str, prefix: str, seconds: float) -> None:
    names = BusNames(prefix)
    publisher = AmqpPublisher(url, names, timeout=10.0)
    await publisher.start()
    async with asyncio.timeout(30):
        while not publisher.ready:
            await asyncio.sleep(0.05)
    body = fixture_bodies()["placement_updated"]
    envelope = parse(body)
    confirmed = 0
    deadline = time.monotonic() + seconds

    async def deliveries() -> None:
        nonlocal confirmed
        while time.monotonic() < deadline:
            unique = dataclasses.replace(envelope, message_id=str(uuid.uuid4()))
            receipt = Receipt(str(uuid.uuid4()), AuthMethod.API_KEY, datetime.now(UTC))
            await publisher.publish(event_message(names, unique, body, receipt))
            confirmed += 1

    started, cpu = time.monotonic(), time.process_time()
    await asyncio.gather(*(deliveries() for _ in range(IN_FLIGHT)))
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    await publisher.close()
    rate, cpu_us = confirmed / elapsed, cpu / confirmed * 1e6
    print(json.dumps({"messages": confirmed, "per_second": rate, "cpu_us": cpu_us}))


if __name__ == "__main__":
    configure_logging("warning", "json")
    uvloop.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
