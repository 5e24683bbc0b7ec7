"""The workers' phase of the benchmark: the no-op worker next to a bare aio-pika loop."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
from aiormq import spec

from consumers import Consumer
from consumers.topology import ConsumerQueues, declare_consumer_topology
from service.shared.bus import AuthMethod, BusNames, Outgoing, Receipt, event_message
from service.shared.envelope import parse
from tests.bench.processes import peak_rss_mib, run_json, settle, start, wait_for
from tests.bench.rounds import alternated
from tests.bench.subjects.noop import noop
from tests.bench.subjects.noop_dedupe import noop_dedupe
from tests.bench.timed import timed
from tests.databases import own_database_async
from tests.receivers import base_env
from tests.support import AMQP_URL, fixture_bodies, open_bus

# A few seconds of draining on this machine. At 10,000 (under two seconds) one run's
# five rounds of the bare loop ranged from 4,539 to 7,335 messages a second.
WORKER_MESSAGES = 20_000


WORKER_ROUNDS = 5


async def prefill(
    prefix: str,
    count: int,
    consumer: Consumer = noop,
    *,
    distinct: bool = False,
    make: Callable[[BusNames], Outgoing] | None = None,
) -> str:
    """Declare `consumer`'s queues and fill its queue with `count` events.

    With `distinct`, each event has a message id of its own, as dedupe needs to do work;
    with `make`, each event is the message it returns.
    """
    names = BusNames(prefix)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await declare_consumer_topology(channel, names, consumer)
        underlay = await channel.get_underlay_channel()
        body = fixture_bodies()["placement_updated"]
        # Shaped as the receiver shapes them, headers included: the worker decodes those.
        receipt = Receipt(str(uuid.uuid4()), AuthMethod.API_KEY, datetime.now(UTC))
        message = event_message(names, parse(body), body, receipt)

        def shaped() -> Outgoing:
            if make is not None:
                return make(names)
            if not distinct:
                return message
            return replace(message, properties=replace_id(message.properties, str(uuid.uuid4())))

        for start_at in range(0, count, 500):
            batch = [shaped() for _ in range(min(500, count - start_at))]
            await asyncio.gather(
                *(
                    underlay.basic_publish(
                        each.body,
                        exchange=each.exchange,
                        routing_key=each.routing_key,
                        properties=each.properties,
                    )
                    for each in batch
                )
            )
        return queue.name


def replace_id(properties: spec.Basic.Properties, message_id: str) -> spec.Basic.Properties:
    return spec.Basic.Properties(
        content_type=properties.content_type,
        delivery_mode=properties.delivery_mode,
        message_id=message_id,
        message_type=properties.message_type,
        timestamp=properties.timestamp,
        headers=properties.headers,
    )


async def noop_worker(
    prefix: str,
    workdir: Path,
    level: str,
    *,
    module: str = "tests.bench.subjects.noop",
    consumer: Consumer = noop,
    distinct: bool = False,
    **extra: str,
) -> dict[str, float]:
    """One worker process drains WORKER_MESSAGES with the no-op handler."""
    await prefill(prefix, WORKER_MESSAGES, consumer, distinct=distinct)
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
        **extra,
    )
    worker = await start(["-m", "consumers", "run", module], env, workdir / f"noop-{level}.log")
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
        "tests.bench.subjects.raw_consumer",
        AMQP_URL,
        queue,
        str(WORKER_MESSAGES),
        str(noop.concurrency),
    )


async def workers(
    prefix: str, workdir: Path, rounds: int = WORKER_ROUNDS
) -> tuple[dict[str, Any], float]:
    """The worker next to the raw loop: alternated, best of WORKER_ROUNDS each.

    Rounds alternate because the machine's speed drifts, every other one with the
    worker first. The worker runs at LOG_LEVEL=warning, then once more at info, which
    writes a line per message.
    """
    contenders = {
        "raw": lambda: raw_loop(prefix),
        "worker": lambda: noop_worker(prefix, workdir, "warning"),
    }
    runs = await alternated(contenders, rounds)
    worker_runs, raw_runs = runs["worker"], runs["raw"]
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


DEDUPE_ROUNDS = 3


async def dedupe_cost(prefix: str, workdir: Path, rounds: int = DEDUPE_ROUNDS) -> dict[str, Any]:
    """The no-op consumer with dedupe on against the same without, every id distinct.

    Alternated rounds (every other one with dedupe first), best of DEDUPE_ROUNDS each,
    on a PostgreSQL database of its own.
    """
    # Each on a prefix of its own: both consumers bind `#`, and each must see only its own.
    async with own_database_async() as url:
        contenders = {
            "plain": lambda: noop_worker(f"{prefix}-plain", workdir, "warning", distinct=True),
            "dedupe": lambda: noop_worker(
                f"{prefix}-dedupe",
                workdir,
                "warning",
                module="tests.bench.subjects.noop_dedupe",
                consumer=noop_dedupe,
                distinct=True,
                DEDUPE_DATABASE_URL=url,
            ),
        }
        runs = await alternated(contenders, rounds)
    plain_runs, dedupe_runs = runs["plain"], runs["dedupe"]
    plain = max(plain_runs, key=lambda run: run["per_second"])
    dedupe = max(dedupe_runs, key=lambda run: run["per_second"])
    return {
        "plain_per_second": plain["per_second"],
        "dedupe_per_second": dedupe["per_second"],
        "plain_cpu_us": min(run["cpu_us"] for run in plain_runs),
        "dedupe_cpu_us": min(run["cpu_us"] for run in dedupe_runs),
        "dedupe_extra_wall_us": 1e6 / dedupe["per_second"] - 1e6 / plain["per_second"],
        "dedupe_vs_plain": dedupe["per_second"] / plain["per_second"],
    }


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
    await remove_queues(f"{prefix}-plain", noop)
    await remove_queues(f"{prefix}-dedupe", noop_dedupe)
    for each in (prefix, f"{prefix}-plain", f"{prefix}-dedupe"):
        connection, bus = await open_bus(each)
        async with connection:
            await bus.channel.queue_delete(f"{each}.naive")  # the naive receiver's
            await bus.channel.exchange_delete(f"{each}.naive")
            await bus.remove_all()
