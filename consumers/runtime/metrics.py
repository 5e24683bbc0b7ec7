"""Prometheus metrics of a worker process, served with `/healthz` on METRICS_PORT."""

from __future__ import annotations

import errno
import socket
from collections import Counter as Tally
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from service.observability.metrics import MAX_ROUTING_KEYS, LabelCap, children
from service.shared.errors import SettingsError

# Where a worker serves /metrics unless METRICS_PORT says otherwise.
DEFAULT_PORT = 9100
BACKLOG = 128


class WorkerMetrics:
    """Every metric a worker exports, per consumer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.routing_key = LabelCap(MAX_ROUTING_KEYS)
        self.messages = Counter(
            "relay_consumer_messages",
            "Messages handled, by consumer, routing key and outcome "
            "(ok, retried, dead, rejected, requeued, filtered).",
            ["consumer", "routing_key", "outcome"],
            registry=self.registry,
        )
        self.handle_seconds = Histogram(
            "relay_consumer_handle_seconds",
            "Seconds to handle a message: its handlers, then the ack or the forward.",
            ["consumer"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "relay_consumer_in_flight",
            "Handlers running now.",
            ["consumer"],
            registry=self.registry,
        )
        self._messages = children(self.messages)
        self._handle_seconds = children(self.handle_seconds)
        # Totals by consumer and outcome, for the reports the console reads.
        self.tally: Tally[tuple[str, str]] = Tally()

    def handled(self, consumer: str, routing_key: str, outcome: str, seconds: float) -> None:
        self._messages(consumer, self.routing_key(routing_key), outcome).inc()
        self.tally[consumer, outcome] += 1
        self._handle_seconds(consumer).observe(seconds)


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """The running `/metrics` endpoint and where it listens."""

    runner: web.AppRunner
    url: str


async def serve_metrics(metrics: WorkerMetrics, port: int | None) -> MetricsServer | None:
    """Start `/metrics` and `/healthz`; the caller cleans the returned runner up.

    `port` 0 serves nothing. None (METRICS_PORT unset) takes DEFAULT_PORT, or any free
    port when another worker on this host has it. A port that was set must be had.
    """
    if port == 0:
        return None

    async def render(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", render)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    listening = None
    for candidate in (DEFAULT_PORT, 0) if port is None else (port,):
        # Bound here, not by a site: a site whose bind failed stays half set up in the
        # runner, and replicas starting together race for the default port. With
        # SO_REUSEADDR two of them can both bind it; only the first to listen has it.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", candidate))
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            if port is None and exc.errno == errno.EADDRINUSE:
                continue
            await runner.cleanup()
            raise SettingsError(
                "METRICS_PORT", f"cannot serve on {candidate}: {exc.strerror}"
            ) from None
        listening = sock
        break
    assert listening is not None  # port 0 always binds
    await web.SockSite(runner, listening).start()
    host, bound = runner.addresses[0][:2]
    return MetricsServer(runner, f"http://{host}:{bound}/metrics")
