"""`consumers reroute`: send what waits in `{prefix}.unrouted` back through the events exchange."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from consumers.operations.reroute import reroute
from consumers.settings import WorkerSettings
from service.shared import brokers
from service.shared.bus import BusNames


def add(commands: Any) -> None:
    parser = commands.add_parser(
        "reroute", help="send unrouted events through the events exchange again"
    )
    parser.add_argument("--limit", type=int, metavar="N", help="at most N events; default all")
    parser.set_defaults(func=lambda args, settings: asyncio.run(_reroute(args, settings)))


async def _reroute(args: argparse.Namespace, settings: WorkerSettings) -> int:
    names = BusNames(settings.bus_prefix)
    connection = await brokers.connect(settings.amqp_url.value)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        result = await reroute(channel, names, args.limit)
    print(
        f"rerouted {result.moved} event(s) from {names.unrouted} through {names.events};"
        f" {result.still_unrouted} wait in {names.unrouted} now"
    )
    return 0
