"""The receiver with tracing off, on at the deployed sampling, and on for every delivery.

On means spans exported over OTLP/HTTP; the deployed sampling is
`parentbased_traceidratio` at 0.1, as in the Kubernetes tracing component. Alternated
rounds at 64 connections and LOG_LEVEL=warning, the same load as the naive comparison,
every other round in reverse order. With `control`, a second receiver with tracing off
runs in the rounds too: how far two of the same code measure apart in this run is the
noise its ratios sit in.
Spans go to a sink in this process that decodes each export only to count its spans
and answers 200, so that spans the SDK's default queue dropped show. After each point
the receiver's exporter process is left to finish what it holds, so that its work is
not charged to the next point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.bench import receiver
from tests.bench.processes import children_quiet
from tests.bench.receiver import measure, purge, serving
from tests.bench.rounds import in_turn
from tests.collector import Collector

ROUNDS = 5
CONNECTIONS = 64


class Sink(Collector):
    """Takes OTLP/HTTP exports and only counts their spans: a bench run sends many."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def take(self, exported: ExportTraceServiceRequest) -> None:
        self.count += sum(len(s.spans) for r in exported.resource_spans for s in r.scope_spans)


async def tracing_cost(
    prefix: str, workdir: Path, rounds: int = ROUNDS, control: bool = True
) -> dict[str, Any]:
    sink = Sink()
    await sink.start()
    traced_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_SERVICE_NAME": "bench-receiver"}
    deployed = {
        **traced_env,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    }
    contenders = {
        "off": await serving("service", prefix, workdir, level="warning"),
        "on": await serving("service", prefix, workdir, level="warning", **traced_env),
        "tenth": await serving("service", prefix, workdir, level="warning", **deployed),
    }
    if control:
        contenders["again"] = await serving("service", prefix, workdir, level="warning")
    best: dict[str, dict[str, Any]] = {}
    rounds_run: list[dict[str, float]] = []
    requests_on = 0
    try:
        for number in range(rounds):
            rates = {}
            for name in in_turn(list(contenders), number):
                process, base = contenders[name]
                point = await measure(
                    process, f"{base}/webhooks/avionte", CONNECTIONS, seconds=receiver.ROUND_SECONDS
                )
                rates[name] = point["per_second"]
                await purge(prefix)
                await children_quiet(process.pid)
                if name == "on":
                    requests_on += point["requests"]
                print(
                    f"  round {number + 1} tracing {name:<5} {point['per_second']:8.0f}/s"
                    f"  CPU {point['cpu_us']:.0f} us/req"
                    f" (+{point['helper_cpu_us']:.0f} exporting)",
                    flush=True,
                )
                if name not in best or point["per_second"] > best[name]["per_second"]:
                    best[name] = point
            rounds_run.append(rates)
    finally:
        for process, _ in contenders.values():
            process.terminate()
            await process.wait()
        await sink.close()
    off = best["off"]["per_second"]
    return {
        "best": best,
        "on_vs_off": best["on"]["per_second"] / off,
        "tenth_vs_off": best["tenth"]["per_second"] / off,
        **({"again_vs_off": best["again"]["per_second"] / off} if control else {}),
        "round_ratios": [
            {f"{name}_vs_off": rate / r["off"] for name, rate in r.items() if name != "off"}
            for r in rounds_run
        ],
        # One span a measured delivery sampled at 100 % (the warm-ups and the 10 % receiver
        # add more): what the sink got of them.
        "spans_received": sink.count,
        "spans_for_measured": requests_on,
    }
