"""The receiver with tracing on (every delivery sampled, exported over OTLP/HTTP) and off.

Alternated rounds at 64 connections and LOG_LEVEL=warning, the same load as the naive
comparison. Spans go to a sink in this process that decodes nothing and answers 200,
and counts what it got, so that spans the SDK's default queue dropped show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.bench.receiver import measure, purge, serving

ROUNDS = 2
CONNECTIONS = 64


class Sink:
    """Takes OTLP/HTTP exports and counts their spans."""

    def __init__(self) -> None:
        self.spans = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/traces", self._take)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _take(self, request: web.Request) -> web.Response:
        exported = ExportTraceServiceRequest.FromString(await request.read())
        self.spans += sum(len(s.spans) for r in exported.resource_spans for s in r.scope_spans)
        return web.Response(content_type="application/x-protobuf")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def tracing_cost(prefix: str, workdir: Path) -> dict[str, Any]:
    sink = Sink()
    await sink.start()
    traced_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_SERVICE_NAME": "bench-receiver"}
    contenders = {
        "off": await serving("service", prefix, workdir, level="warning"),
        "on": await serving("service", prefix, workdir, level="warning", **traced_env),
    }
    best: dict[str, dict[str, Any]] = {}
    requests_on = 0
    try:
        for number in range(ROUNDS):
            for name, (process, base) in contenders.items():
                point = await measure(process, f"{base}/webhooks/avionte", CONNECTIONS)
                await purge(prefix)
                if name == "on":
                    requests_on += point["requests"]
                print(
                    f"  round {number + 1} tracing {name:<3} {point['per_second']:8.0f}/s"
                    f"  CPU {point['cpu_us']:.0f} us/req",
                    flush=True,
                )
                if name not in best or point["per_second"] > best[name]["per_second"]:
                    best[name] = point
    finally:
        for process, _ in contenders.values():
            process.terminate()
            await process.wait()
        await sink.close()
    return {
        "best": best,
        "on_vs_off": best["on"]["per_second"] / best["off"]["per_second"],
        # Two spans a measured delivery (the warm-ups add more): what the sink got of them.
        "spans_received": sink.spans,
        "spans_for_measured": 2 * requests_on,
    }
