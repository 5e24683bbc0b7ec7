"""`consumers run NAME...`: run consumers until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

import structlog
import uvloop

from consumers.loader import load
from consumers.runtime.threads import HandlerThreads
from consumers.runtime.worker import Worker
from consumers.settings import WorkerSettings
from service.observability import tracing
from service.shared import heap

log = structlog.get_logger("consumers")


def add(commands: Any) -> None:
    parser = commands.add_parser("run", help="run the named consumers until SIGTERM or SIGINT")
    parser.add_argument("names", nargs="+", metavar="NAME", help="consumer module: short or dotted")
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="in-flight handlers per consumer in this process (sets the prefetch); "
        "default: each consumer's own",
    )
    parser.set_defaults(func=command)


def command(args: argparse.Namespace, settings: WorkerSettings) -> int:
    uvloop.run(_run(args.names, args.concurrency, settings))
    return 0


async def _run(names: list[str], concurrency: int | None, settings: WorkerSettings) -> None:
    worker = Worker(
        [consumer for _, consumer in load(names)],
        settings,
        concurrency=concurrency,
        tracer=tracing.tracer("worker"),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    threads = HandlerThreads()
    loop.set_default_executor(threads)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Once its consumers have first started, this process is a long-running server.
    settling = asyncio.create_task(_settle_when(worker.ready))
    try:
        await worker.run(stop)
    finally:
        settling.cancel()
        tracing.shutdown()
    if threads.unfinished:
        # Every message is settled or back on its queue; only stuck threads are left, and
        # Python would wait for them without end.
        log.warning("exiting with handler threads still running", threads=threads.unfinished)
        sys.stderr.flush()
        os._exit(0)


async def _settle_when(ready: asyncio.Event) -> None:
    await ready.wait()
    heap.settle()
