"""Prometheus metrics of a worker process, served with `/healthz` on METRICS_PORT."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from service.metrics import MAX_ROUTING_KEYS, LabelCap, children


class WorkerMetrics:
    """Every metric a worker exports, per consumer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.routing_key = LabelCap(MAX_ROUTING_KEYS)
        self.messages = Counter(
            "relay_consumer_messages",
            "Messages handled, by consumer, routing key and outcome "
            "(ok, retried, dead, rejected, requeued).",
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

    def handled(self, consumer: str, routing_key: str, outcome: str, seconds: float) -> None:
        self._messages(consumer, self.routing_key(routing_key), outcome).inc()
        self._handle_seconds(consumer).observe(seconds)


async def serve_metrics(metrics: WorkerMetrics, host: str, port: int) -> web.AppRunner:
    """Start the metrics endpoint; the caller cleans the returned runner up."""

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
    await web.TCPSite(runner, host, port).start()
    return runner
