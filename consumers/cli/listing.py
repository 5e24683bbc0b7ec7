"""`consumers list [NAME...]`: consumers and their bindings, and those on the bus not among them."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import aio_pika

from consumers.consumer import Consumer
from consumers.loader import bundled, load
from consumers.operations import registry
from consumers.operations.prune import occupancy
from consumers.settings import WorkerSettings
from consumers.topology import ConsumerQueues
from service.shared import brokers
from service.shared.bus import BusNames


def add(commands: Any) -> None:
    parser = commands.add_parser("list", help="print each consumer with its bindings")
    parser.add_argument("names", nargs="*", metavar="NAME", help="default: the bundled examples")
    parser.set_defaults(func=command)


def _delays(consumer: Consumer) -> str:
    return " ".join(
        f"{d / 60:g}m" if d >= 60 and d % 60 == 0 else f"{d:g}s" for d in consumer.retry_delays
    )


def command(args: argparse.Namespace, settings: WorkerSettings) -> int:
    loaded = load(args.names or bundled())
    for module, consumer in loaded:
        queue = ConsumerQueues(settings.bus_prefix, consumer.name).main
        print(
            f"{consumer.name}  ({module})  queue {queue}  concurrency {consumer.concurrency}"
            f"  retries {_delays(consumer) or 'none'}"
        )
        for route in consumer.routes:
            handler = getattr(route.handler, "__qualname__", type(route.handler).__name__)
            only = (
                f"  tenants {', '.join(map(str, sorted(route.tenants)))}" if route.tenants else ""
            )
            print(f"    {', '.join(route.patterns)}{only}  ->  {handler}")
    try:
        on_bus = asyncio.run(_registered(settings))
    except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as exc:
        print(f"(the broker cannot be reached, {type(exc).__name__}: consumers on the bus unknown)")
        return 0
    here = {consumer.name for _, consumer in loaded}
    others = {name: state for name, state in on_bus.items() if name not in here}
    if others:
        print(f"on the bus under {settings.bus_prefix!r} but not among these:")
        for name, (waiting, attached) in others.items():
            if waiting is None:
                print(f"  {name}  (no queue; forget it with: python -m consumers prune {name})")
            elif attached:
                # Running somewhere else: not a candidate for retiring.
                print(f"  {name}  ({waiting} waiting; {attached} worker(s) attached)")
            else:
                advice = f"retire it with: python -m consumers prune {name}"
                print(f"  {name}  ({waiting} waiting; {advice})")
    return 0


async def _registered(settings: WorkerSettings) -> dict[str, tuple[int | None, int]]:
    """Every consumer the registry knows: its queue's depth (None: no queue) and workers."""
    connection = await brokers.connect(settings.amqp_url.value, within=5)
    async with connection:
        names = BusNames(settings.bus_prefix)
        found = {}
        # Reading creates nothing where no worker ever started.
        for name in await registry.read(connection, names):
            found[name] = await occupancy(connection, ConsumerQueues(names.prefix, name).main)
        return found
