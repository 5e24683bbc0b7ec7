"""Running the receiver: listen, wait for SIGTERM or SIGINT, then shut down in order.

The order is: report not ready, keep taking deliveries for SHUTDOWN_GRACE seconds
while load balancers notice, refuse new deliveries and stop listening, let
in-flight publishes reach their confirm (each is bounded by PUBLISH_TIMEOUT),
then close the broker connection.

The listening sockets are the receiver's own (`listener`), so the connection cap
counts every accepted socket, TLS handshakes included; aiohttp handles each
connection once it is made.
"""

from __future__ import annotations

import asyncio
import signal
import ssl

import structlog
from aiohttp import web

from service.http.app import CONTEXT, create_app
from service.http.front import open_front_door
from service.http.limits import fit_connections
from service.http.listener import Listener
from service.observability import tracing
from service.publishing.publisher import Publisher
from service.settings import Settings
from service.shared import heap
from service.shared.errors import ListenFailed, SettingsError

log = structlog.get_logger("service.server")


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A server context for TLS 1.2 or newer, or None when TLS is not configured."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(
            "TLS_CERT_FILE", f"cannot load the certificate and key ({type(exc).__name__})"
        ) from None
    return context


async def serve(settings: Settings, *, publisher: Publisher | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return; `publisher` as in `create_app`."""
    context = tls_context(settings)
    app = create_app(settings, publisher=publisher, tracer=tracing.tracer("receiver"))
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        # In-flight handlers finish within PUBLISH_TIMEOUT plus a spool write; the rest is slack.
        shutdown_timeout=settings.publish_timeout + 5.0,
        # aiohttp starts this timer when a connection opens and data does not reset it, so
        # it also bounds how long a client may take to send a request's headers.
        keepalive_timeout=settings.keepalive_timeout,
        max_line_size=settings.max_header_bytes,
        max_field_size=settings.max_header_bytes,
        max_headers=settings.max_headers,
        # Bodies stay as sent: the HMAC covers the raw bytes and the bus carries them.
        auto_decompress=False,
    )
    fitted = fit_connections(settings.max_connections)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await runner.setup()
    lifecycle = app[CONTEXT].lifecycle
    assert runner.server is not None
    direct = open_front_door(app, runner.server)
    listener = Listener(
        runner.server,
        limit=fitted.max_connections,
        tls=context,
        handshake_timeout=settings.keepalive_timeout,
    )
    try:
        try:
            await listener.start(settings.host, settings.port)
        except OSError as exc:
            raise ListenFailed(settings.host, settings.port, exc.strerror or str(exc)) from None
        log.info(
            "receiver listening",
            addresses=[_address(sock.getsockname()) for sock in listener.sockets],
            tls=context is not None,
            max_connections=fitted.max_connections,
            direct_route=direct,
            broker=settings.broker_display,
            prefix=settings.bus_prefix,
        )
        heap.settle()
        await stop.wait()
        lifecycle.shutting_down = True
        log.info("shutting down", grace_seconds=settings.shutdown_grace)
        await asyncio.sleep(settings.shutdown_grace)
    finally:
        lifecycle.intake_closed = True
        await listener.close()
        await runner.cleanup()
        tracing.shutdown()
    log.info("stopped")


def _address(name: tuple[str, int] | tuple[str, int, int, int]) -> str:
    return f"{name[0]}:{name[1]}"
