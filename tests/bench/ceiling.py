"""The broker's ceiling: one process publishing persistent, confirmed messages with aiormq.

Usage: python -m tests.bench.ceiling AMQP_URL PREFIX SECONDS
Prints one JSON line: messages confirmed per second, and the process's CPU time per message.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiormq
from aiormq.abc import AbstractChannel

from tests.support import fixture_bodies

IN_FLIGHT = 256


async def main(url: str, prefix: str, seconds: float) -> None:
    connection = await aiormq.connect(url)
    channel: AbstractChannel = await connection.channel(publisher_confirms=True)
    exchange, queue = f"{prefix}.ceiling", f"{prefix}.ceiling"
    await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    await channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    await channel.queue_bind(queue, exchange, routing_key="#")
    body = fixture_bodies()["placement_updated"]
    properties = aiormq.spec.Basic.Properties(delivery_mode=2, content_type="application/json")
    confirmed = 0
    deadline = time.monotonic() + seconds

    async def publisher() -> None:
        nonlocal confirmed
        while time.monotonic() < deadline:
            await channel.basic_publish(
                body, exchange=exchange, routing_key="placement.updated", properties=properties
            )
            confirmed += 1

    started, cpu = time.monotonic(), time.process_time()
    await asyncio.gather(*(publisher() for _ in range(IN_FLIGHT)))
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    await channel.queue_delete(queue)
    await channel.exchange_delete(exchange)
    await connection.close()
    rate, cpu_us = confirmed / elapsed, cpu / confirmed * 1e6
    print(
        json.dumps(
            {"messages": confirmed, "seconds": elapsed, "per_second": rate, "cpu_us": cpu_us}
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
