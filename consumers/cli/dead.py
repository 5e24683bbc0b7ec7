"""`consumers dead NAME` and `consumers replay NAME`: look at dead letters, and send them back."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from consumers.cli.names import require
from consumers.errors import ConsumerError
from consumers.loader import load
from consumers.operations.dead import inspect_dead, replay_dead
from consumers.settings import WorkerSettings
from consumers.topology import ConsumerQueues
from service.shared import brokers
from service.shared.bus import BusNames


def add(commands: Any) -> None:
    dead = commands.add_parser("dead", help="show dead letters; consumes nothing")
    dead.add_argument("name", metavar="NAME", help="consumer name or module")
    dead.add_argument("--sample", type=int, default=1000, metavar="N", help="letters to read")
    dead.set_defaults(func=lambda args, settings: asyncio.run(_dead(args, settings)))
    replay = commands.add_parser("replay", help="send dead letters back to be processed")
    replay.add_argument("name", metavar="NAME", help="consumer name or module")
    replay.add_argument("--limit", type=int, metavar="N", help="at most N letters; default all")
    replay.set_defaults(func=lambda args, settings: asyncio.run(_replay(args, settings)))


def consumer_names(name: str) -> list[str]:
    """The consumers a module defines, or `name` itself when it is no module."""
    try:
        return [consumer.name for _, consumer in load([name])]
    except ConsumerError:
        return [name]


async def _dead(args: argparse.Namespace, settings: WorkerSettings) -> int:
    connection = await brokers.connect(settings.amqp_url.value)
    async with connection:
        consumers = consumer_names(args.name)
        await require(connection, BusNames(settings.bus_prefix), consumers)
        for consumer in consumers:
            queues = ConsumerQueues(settings.bus_prefix, consumer)
            report = await inspect_dead(connection, queues, args.sample)
            print(f"{report.queue}: {report.count} dead letter(s)")
            if report.count:
                print(f"  oldest failure: {report.oldest or 'unknown'}")
                print(f"  errors (of {report.sampled} read):")
                for group in report.errors:
                    print(f"    {group.count:6d}  {group.error}")
                    if group.example:
                        print(f"{'':12}e.g. {group.example}")
    return 0


async def _replay(args: argparse.Namespace, settings: WorkerSettings) -> int:
    connection = await brokers.connect(settings.amqp_url.value)
    async with connection:
        consumers = consumer_names(args.name)
        await require(connection, BusNames(settings.bus_prefix), consumers)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        for consumer in consumers:
            queues = ConsumerQueues(settings.bus_prefix, consumer)
            moved = await replay_dead(channel, queues, args.limit)
            print(f"replayed {moved} dead letter(s) from {queues.dead} to {queues.main}")
    return 0
