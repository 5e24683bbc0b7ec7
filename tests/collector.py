"""An OTLP/HTTP endpoint served by a test: it takes what processes export and decodes it.

Spans are decoded with the OpenTelemetry protocol package (`opentelemetry-proto`), as a
collector would, and kept as plain records for assertions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1 import trace_pb2

SERVER, PRODUCER, CONSUMER, INTERNAL = (
    trace_pb2.Span.SPAN_KIND_SERVER,
    trace_pb2.Span.SPAN_KIND_PRODUCER,
    trace_pb2.Span.SPAN_KIND_CONSUMER,
    trace_pb2.Span.SPAN_KIND_INTERNAL,
)
ERROR = trace_pb2.Status.STATUS_CODE_ERROR


@dataclass
class Span:
    service: str
    trace_id: str
    span_id: str
    parent: str
    name: str
    kind: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 0


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


class Collector:
    """Serves `POST /v1/traces` on a free loopback port; `url` is the OTLP endpoint."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/traces", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        self.take(ExportTraceServiceRequest.FromString(await request.read()))
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def take(self, exported: ExportTraceServiceRequest) -> None:
        """Keep every span of one export."""
        for resource_spans in exported.resource_spans:
            service = str(_attributes(resource_spans.resource.attributes).get("service.name"))
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        Span(
                            service,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.name,
                            span.kind,
                            _attributes(span.attributes),
                            [(e.name, _attributes(e.attributes)) for e in span.events],
                            span.status.code,
                        )
                    )

    def env(self, service: str) -> dict[str, str]:
        """The standard variables that send a process's spans here, quickly."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.url,
            "OTEL_SERVICE_NAME": service,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }

    async def until(self, condition: Callable[[list[Span]], bool], within: float = 20) -> None:
        async with asyncio.timeout(within):
            while not condition(self.spans):
                await asyncio.sleep(0.1)
