"""`consumers console`: the operator console in a browser (`consumers.console`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from typing import Any

import structlog
import uvloop
from aiohttp import web

from consumers.console.pages import build
from consumers.console.settings import ConsoleSettings
from consumers.settings import WorkerSettings
from service.observability.logs import configure_logging
from service.shared.errors import SettingsError
from service.shared.supervise import ended_within, waiting_tasks

log = structlog.get_logger("consumers.console")

# In-flight pages get 5 s (`shutdown_timeout`); each later step has its own bound.
STOP_WITHIN = 15.0


def add(commands: Any) -> None:
    parser = commands.add_parser(
        "console",
        help="serve the operator console: dead letters, unrouted and invalid events, replay",
        description="Serves on CONSOLE_HOST:CONSOLE_PORT (default 127.0.0.1:8090); needs "
        "CONSOLE_PASSWORD (or CONSOLE_PASSWORD_FILE), user CONSOLE_USER (default operator).",
    )
    parser.set_defaults(func=command)


def command(args: argparse.Namespace, settings: WorkerSettings) -> int:
    console = ConsoleSettings.from_env(os.environ, settings)
    configure_logging(settings.log_level, settings.log_format, redact=console.secret_values())
    uvloop.run(serve(console))
    return 0


async def serve(settings: ConsoleSettings) -> None:
    """Serve until SIGTERM or SIGINT."""
    runner = web.AppRunner(build(settings), access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        sock = _listening(settings.host, settings.port)
        port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        log.info(
            "console listening",
            url=f"http://{settings.host}:{port}/",
            user=settings.user,
            management=settings.management_display,
            prefix=settings.worker.bus_prefix,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("console stopping")
    finally:
        if not await ended_within(runner.cleanup(), STOP_WITHIN):
            # Nothing is lost: a sweep acks an original only once its copy is confirmed.
            log.error(
                "console: could not stop in time; exiting anyway",
                within=STOP_WITHIN,
                waiting=waiting_tasks(),
            )
            sys.stderr.flush()
            os._exit(1)


def _listening(host: str, port: int) -> socket.socket:
    """A bound socket, so the port chosen for 0 is known; `SettingsError` if it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Inside the try: with SO_REUSEADDR a second console can bind a port that
        # another is about to listen on, and learns it is taken only here.
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise SettingsError(
            "CONSOLE_PORT", f"cannot serve on {host}:{port}: {exc.strerror}"
        ) from None
    sock.setblocking(False)
    return sock
