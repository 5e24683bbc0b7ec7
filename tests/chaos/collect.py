"""Reading back what the run left: handling files, the `once` table, dead and unrouted queues."""

from __future__ import annotations

from collections import Counter

import aio_pika
import asyncpg
from aio_pika.exceptions import AMQPError

from consumers.topology import ConsumerQueues
from service.shared.bus import BusNames
from service.shared.environment import DEFAULT_BUS_PREFIX
from tests.chaos.handlers.common import handled_path
from tests.chaos.system import System

FILED = ("plain", "picky", "retiring", "heir")


async def handlings(system: System) -> dict[str, Counter[str]]:
    """Each consumer's handlings, by message id."""
    found: dict[str, Counter[str]] = {}
    for name in FILED:
        path = handled_path(system.ledger_dir, name)
        lines = path.read_text().splitlines() if path.exists() else []
        found[name] = Counter(line for line in lines if line)
    connection = await asyncpg.connect(system.database_url)
    try:
        applied = await connection.fetch("SELECT message_id FROM chaos_applied")
        # Made by the history worker on its start; absent only if it never started.
        kept = await connection.fetch(
            "SELECT message_id FROM relay_history WHERE scope = $1", DEFAULT_BUS_PREFIX
        )
    finally:
        await connection.close()
    found["once"] = Counter(row["message_id"] for row in applied)
    found["history"] = Counter(row["message_id"] for row in kept)
    return found


async def held(system: System) -> tuple[dict[str, list[str]], list[str], int]:
    """Dead letters per consumer, the ids in `.unrouted`, and how many `.invalid` holds.

    Read at the very end, taking each message: nothing runs after this.
    """
    names = BusNames(DEFAULT_BUS_PREFIX)
    connection = await aio_pika.connect(system.amqp_url.split(",")[0])
    async with connection:
        dead = {
            name: await _take(connection, ConsumerQueues(names.prefix, name).dead)
            for name in ("plain", "once", "picky", "retiring", "heir", "history")
        }
        unrouted = await _take(connection, names.unrouted)
        invalid = len(await _take(connection, names.invalid))
    return dead, unrouted, invalid


async def _take(connection: aio_pika.abc.AbstractConnection, queue_name: str) -> list[str]:
    ids: list[str] = []
    channel = await connection.channel()
    try:
        queue = await channel.get_queue(queue_name, ensure=True)
    except AMQPError:
        return ids  # never declared: holds nothing
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        ids.append(message.message_id or "")
    await channel.close()
    return ids
