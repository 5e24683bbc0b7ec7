"""`consumers prune NAME`: retire a consumer without losing its backlog.

The work is `consumers.operations.prune`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from consumers.cli.names import require
from consumers.operations.prune import CannotRetire, retire
from consumers.settings import WorkerSettings
from consumers.topology import ConsumerQueues
from service.shared import brokers
from service.shared.bus import BusNames


def add(commands: Any) -> None:
    parser = commands.add_parser(
        "prune", help="retire a consumer: unbind its queue, move its backlog, delete its queues"
    )
    parser.add_argument("name", metavar="NAME", help="the retired consumer's name")
    parser.add_argument(
        "--into", metavar="OTHER", help="move its waiting messages to OTHER's queue"
    )
    parser.add_argument(
        "--delete", action="store_true", help="delete its queues once all are empty"
    )
    parser.set_defaults(func=lambda args, settings: asyncio.run(_prune(args, settings)))


async def _prune(args: argparse.Namespace, settings: WorkerSettings) -> int:
    connection = await brokers.connect(settings.amqp_url.value)
    async with connection:
        await require(connection, BusNames(settings.bus_prefix), [args.name], registered=True)
        try:
            report = await retire(
                connection,
                BusNames(settings.bus_prefix),
                args.name,
                into=args.into,
                delete=args.delete,
            )
        except CannotRetire as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    unbound = ", ".join(report.unbound) or "nothing (no bindings were recorded)"
    print(f"{args.name}: unbound {unbound}; no new events reach it")
    if args.into:
        target = ConsumerQueues(settings.bus_prefix, args.into).main
        print(f"  moved {report.moved} waiting message(s) to {target}")
    for queue, count in sorted(report.depths.items()):
        print(f"  {queue}: {count} message(s)")
    if report.deleted:
        print(f"  deleted {len(report.deleted)} queue(s)")
    return 0
