"""OpenTelemetry traces, configured only by the standard variables, or nothing at all.

Tracing is on when `OTEL_TRACES_EXPORTER` names an exporter other than `none`, or when
`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, unless
`OTEL_SDK_DISABLED=true`. Off, no OpenTelemetry module is even imported, no header is
added to any message, and a delivery costs what it did before.

On, the SDK reads its own variables as usual: `OTEL_SERVICE_NAME` and
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`, the OTLP
endpoint, headers, timeout and protocol (`http/protobuf`, the default, or `grpc` when
the gRPC exporter package is installed), and `OTEL_PROPAGATORS` (W3C trace context by
default: the `traceparent` and `tracestate` headers).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from service.shared.errors import SettingsError

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
TRACER_NAME = "avionte-relay"
SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"
# The instrumentation scope of our spans, as a record carries it (`handoff.compact`).
SCOPE: tuple[str, str | None, str | None, dict[str, Any]] = (TRACER_NAME, None, SCHEMA_URL, {})
# Where a recorded span goes when it ends (`recorded`): set while OTLP is the only exporter.
_recorder: list[Callable[[tuple[Any, ...]], None]] = []
# Whether OTEL_PROPAGATORS, as the tracer was made, asks for W3C headers only.
_w3c: list[bool] = []


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the standard variables ask for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return any(environ.get(name, "").strip() for name in _ENDPOINTS)


def tracer(component: str, environ: Mapping[str, str] = os.environ) -> Any:
    """A tracer for `component` (`receiver`, `worker`), or None when tracing is off.

    Raises `SettingsError` for an exporter or protocol this installation cannot serve.
    """
    if not enabled(environ):
        return None
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": f"avionte-relay-{component}"}))
    from service.observability.resource import SettledResource
    from service.observability.sampling import ChosenIds

    resource = SettledResource(resource.attributes, resource.schema_url)
    provider = TracerProvider(resource=resource, id_generator=ChosenIds())
    exporters = _exporters(environ)
    recorded = None
    for name in exporters:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        else:
            from service.observability.handoff import SpanHandoff
            from service.observability.logs import setup

            _otlp_class(environ)  # a protocol this installation cannot serve fails here
            handoff = SpanHandoff(resource, environ, setup())
            provider.add_span_processor(handoff)
            if exporters == ["otlp"]:
                recorded = handoff.hand
    trace.set_tracer_provider(provider)
    _w3c[:] = [_w3c_only(environ)]
    _recorder.clear()
    # The API keeps the first provider a process sets: record only for the one in use.
    if recorded is not None and trace.get_tracer_provider() is provider:
        _recorder.append(recorded)
    return trace.get_tracer(TRACER_NAME, schema_url=SCHEMA_URL)


def w3c_propagation() -> bool:
    """Whether the propagators are W3C trace context (and baggage) only, the default."""
    return bool(_w3c) and _w3c[0]


def _w3c_only(environ: Mapping[str, str]) -> bool:
    raw = environ.get("OTEL_PROPAGATORS", "").strip().lower()
    names = {part.strip() for part in raw.split(",") if part.strip()}
    return not names or (names <= {"tracecontext", "baggage"} and "tracecontext" in names)


def recorder() -> Callable[[tuple[Any, ...]], None] | None:
    """Where a recorded span's values go, or None when another exporter needs SDK spans."""
    return _recorder[0] if _recorder else None


def shutdown() -> None:
    """Export what is still buffered; a no-op when tracing is off."""
    import sys

    if "opentelemetry.trace" not in sys.modules:
        return
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


def _exporters(environ: Mapping[str, str]) -> list[str]:
    raw = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    names = [part.strip() for part in raw.split(",") if part.strip() and part.strip() != "none"]
    unknown = [name for name in names if name not in ("otlp", "console")]
    if unknown:
        raise SettingsError("OTEL_TRACES_EXPORTER", f"unknown exporter {unknown[0]!r}; use otlp")
    return names


def otlp_exporter(environ: Mapping[str, str]) -> Any:
    """The OTLP exporter the standard variables ask for."""
    return _otlp_class(environ)()


def _otlp_class(environ: Mapping[str, str]) -> Any:
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise SettingsError(
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "grpc needs the package opentelemetry-exporter-otlp-proto-grpc;"
                " http/protobuf works as installed",
            ) from None
        return GrpcExporter
    raise SettingsError(
        "OTEL_EXPORTER_OTLP_PROTOCOL", f"must be http/protobuf or grpc, got {protocol!r}"
    )
