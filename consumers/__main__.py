"""`python -m consumers`: run consumers, list them, and inspect or replay their dead letters."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import aio_pika
import uvloop

from consumers.consumer import Consumer
from consumers.dead import inspect_dead, replay_dead
from consumers.errors import ConsumerError
from consumers.loader import bundled, load
from consumers.settings import WorkerSettings
from consumers.topology import ConsumerQueues
from consumers.worker import Worker
from service.errors import SettingsError
from service.logs import configure_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m consumers",
        description="Consumer workers for Avionté events. AMQP_URL and BUS_PREFIX select the bus.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the named consumers until SIGTERM or SIGINT")
    run.add_argument("names", nargs="+", metavar="NAME", help="consumer module: short or dotted")
    run.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="in-flight handlers per consumer in this process (sets the prefetch); "
        "default: each consumer's own",
    )
    listing = commands.add_parser("list", help="print each consumer with its bindings")
    listing.add_argument("names", nargs="*", metavar="NAME", help="default: the bundled examples")
    dead = commands.add_parser("dead", help="show dead letters; consumes nothing")
    dead.add_argument("name", metavar="NAME", help="consumer name or module")
    dead.add_argument("--sample", type=int, default=1000, metavar="N", help="letters to read")
    replay = commands.add_parser("replay", help="send dead letters back to be processed")
    replay.add_argument("name", metavar="NAME", help="consumer name or module")
    replay.add_argument("--limit", type=int, metavar="N", help="at most N letters; default all")
    return parser


def _delays(consumer: Consumer) -> str:
    return " ".join(
        f"{d / 60:g}m" if d >= 60 and d % 60 == 0 else f"{d:g}s" for d in consumer.retry_delays
    )


def _list(names: list[str], settings: WorkerSettings) -> None:
    for module, consumer in load(names or bundled()):
        queue = ConsumerQueues(settings.bus_prefix, consumer.name).main
        print(
            f"{consumer.name}  ({module})  queue {queue}  concurrency {consumer.concurrency}"
            f"  retries {_delays(consumer) or 'none'}"
        )
        for route in consumer.routes:
            handler = getattr(route.handler, "__qualname__", type(route.handler).__name__)
            print(f"    {', '.join(route.patterns)}  ->  {handler}")


def _consumer_names(name: str) -> list[str]:
    try:
        return [consumer.name for _, consumer in load([name])]
    except ConsumerError:
        return [name]


async def _dead(name: str, sample: int, settings: WorkerSettings) -> None:
    connection = await aio_pika.connect(settings.amqp_url.value)
    async with connection:
        for consumer in _consumer_names(name):
            queues = ConsumerQueues(settings.bus_prefix, consumer)
            report = await inspect_dead(connection, queues, sample)
            print(f"{report.queue}: {report.count} dead letter(s)")
            if report.count:
                print(f"  oldest failure: {report.oldest or 'unknown'}")
                print(f"  errors (of {report.sampled} read):")
                for error, count in report.errors:
                    print(f"    {count:6d}  {error}")


async def _replay(name: str, limit: int | None, settings: WorkerSettings) -> None:
    connection = await aio_pika.connect(settings.amqp_url.value)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        for consumer in _consumer_names(name):
            queues = ConsumerQueues(settings.bus_prefix, consumer)
            moved = await replay_dead(channel, queues, limit)
            print(f"replayed {moved} dead letter(s) from {queues.dead} to {queues.main}")


async def _run(names: list[str], concurrency: int | None, settings: WorkerSettings) -> None:
    worker = Worker([consumer for _, consumer in load(names)], settings, concurrency=concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await worker.run(stop)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on a bad setting or consumer definition, 1 on a broker error."""
    args = _parser().parse_args(argv)
    try:
        settings = WorkerSettings.from_env(os.environ)
        for option in ("concurrency", "sample", "limit"):
            value = getattr(args, option, None)
            if value is not None and value < 1:
                raise SettingsError(f"--{option}", "must be at least 1")
        configure_logging(settings.log_level, settings.log_format, redact=settings.secret_values())
        if args.command == "list":
            _list(args.names, settings)
        elif args.command == "run":
            uvloop.run(_run(args.names, args.concurrency, settings))
        elif args.command == "dead":
            asyncio.run(_dead(args.name, args.sample, settings))
        else:
            asyncio.run(_replay(args.name, args.limit, settings))
    except (SettingsError, ConsumerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        print(f"error: broker: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
