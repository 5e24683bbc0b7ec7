"""Running the receiver: listen, wait for SIGTERM or SIGINT, then shut down in order.

The order is: report not ready, keep taking deliveries for SHUTDOWN_GRACE seconds
while load balancers notice, refuse new deliveries and stop listening, let
in-flight publishes reach their confirm (each is bounded by PUBLISH_TIMEOUT),
then close the broker connection.
"""

from __future__ import annotations

import asyncio
import signal

import structlog
from aiohttp import web

from service.app import CONTEXT, create_app
from service.settings import Settings

log = structlog.get_logger(__name__)


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return."""
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        # In-flight handlers finish within PUBLISH_TIMEOUT plus a spool write; the rest is slack.
        shutdown_timeout=settings.publish_timeout + 5.0,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await runner.setup()
    lifecycle = app[CONTEXT].lifecycle
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        log.info(
            "receiver listening",
            addresses=[f"{host}:{port}" for host, port, *_ in runner.addresses],
            broker=settings.broker_display,
            prefix=settings.bus_prefix,
        )
        await stop.wait()
        lifecycle.shutting_down = True
        log.info("shutting down", grace_seconds=settings.shutdown_grace)
        await asyncio.sleep(settings.shutdown_grace)
    finally:
        lifecycle.intake_closed = True
        await runner.cleanup()
    log.info("stopped")
