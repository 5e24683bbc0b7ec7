"""The benchmark's report: the targets, the table it prints, and the plot it draws."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.bench.history.report import plans
from tests.bench.history.report import rows as history_rows

TARGETS = {
    "warning_vs_naive": 1.2,
    "info_vs_naive": 1.0,
    "same_vs_distinct": 0.5,
    "p99_vs_naive": 1.5,
    "receiver_vs_ceiling_at_64": 0.70,
    "receiver_p99_ms_at_64": 50.0,
    "e2e_p50_ms": 10.0,
    "worker_vs_raw": 0.90,
    "receiver_rss_mib": 120.0,
    # Round three: against the naive receiver on uvloop, tracing's cost, dedupe's cost.
    "info_vs_naive_uvloop": 1.5,
    "tracing_tenth_vs_off": 0.90,
    "tracing_on_vs_off": 0.60,
    "dedupe_vs_plain": 0.50,
}


def table(result: dict[str, Any]) -> str:
    rows = [
        (
            "ceiling (aiormq, confirms)",
            f"{result['ceiling_per_second']:.0f} msg/s",
            f"CPU {result['ceiling_cpu_us']:.0f} us/msg",
        )
    ]
    rows.append(
        (
            "publish path, no HTTP",
            f"{result['publish_path_per_second']:.0f} msg/s",
            f"CPU {result['publish_path_cpu_us']:.0f} us/msg, receiver's publisher and messages",
        )
    )
    stub = result["receiver_stubbed"]
    for point, label in [*((p, "receiver") for p in result["receiver"]), (stub, "publish stubbed")]:
        rows.append(
            (
                f"{label}, {point['connections']} connections",
                f"{point['per_second']:.0f} req/s",
                f"p50 {point['p50_ms']:.1f}  p95 {point['p95_ms']:.1f}"
                f"  p99 {point['p99_ms']:.1f} ms  errors {point['errors']}"
                f"  CPU {point['cpu_us']:.0f} us/req",
            )
        )
    versus = result.get("versus")
    if versus:
        for name, label in (
            ("naive", "naive receiver, 64 connections"),
            ("naive_uvloop", "naive receiver on uvloop, 64"),
            ("warning", "ours at warning, 64"),
            ("info", "ours at info, 64"),
            ("same", "ours, one delivery repeated, 64"),
        ):
            point = versus["best"][name]
            rows.append(
                (
                    label,
                    f"{point['per_second']:.0f} req/s",
                    f"p99 {point['p99_ms']:.1f} ms  CPU {point['cpu_us']:.0f} us/req"
                    f"  errors {point['errors']}  (best of {len(versus['rounds'])})",
                )
            )
    traced = result.get("tracing")
    if traced:
        for name, label in (
            ("off", "tracing off, warning, 64"),
            ("tenth", "tracing at 10 %, 64"),
            ("on", "tracing on (100 %), 64"),
        ):
            point = traced["best"][name]
            rows.append(
                (
                    label,
                    f"{point['per_second']:.0f} req/s",
                    f"p99 {point['p99_ms']:.1f} ms  CPU {point['cpu_us']:.0f} us/req",
                )
            )
        rows.append(("tracing at 10 % / off", f"{traced['tenth_vs_off']:.2f}", ""))
        if "again_vs_off" in traced:
            rows.append(
                (
                    "tracing off again / off",
                    f"{traced['again_vs_off']:.2f}",
                    "the same code twice: how far apart this run measures it",
                )
            )
        rows.append(
            (
                "tracing on / off",
                f"{traced['on_vs_off']:.2f}",
                f"spans exported {traced['spans_received']} for"
                f" {traced['spans_for_measured']} measured",
            )
        )
    rows.append(
        (
            "sum of the halves",
            f"{result['sum_of_halves']:.2f} of ceiling",
            "ceiling CPU / (publish stubbed CPU + publish path CPU)",
        )
    )
    e2e = result["end_to_end"]
    rows.append(
        (
            f"end to end at {e2e['rate']}/s",
            f"p50 {e2e['p50_ms']:.1f} ms",
            f"p99 {e2e['p99_ms']:.1f} ms",
        )
    )
    rows.append(
        (
            "worker, no-op handler",
            f"{result['worker_per_second']:.0f} msg/s",
            f"CPU {result['worker_cpu_us']:.0f} us/msg, LOG_LEVEL=warning",
        )
    )
    rows.append(
        (
            "raw aio-pika consume+ack",
            f"{result['raw_per_second']:.0f} msg/s",
            f"CPU {result['raw_cpu_us']:.0f} us/msg",
        )
    )
    rows.append(
        (
            "worker, a log line per message",
            f"{result['worker_logged_per_second']:.0f} msg/s",
            "LOG_LEVEL=info",
        )
    )
    dedupe = result.get("dedupe")
    if dedupe:
        rows.append(
            (
                "worker, distinct ids, no dedupe",
                f"{dedupe['plain_per_second']:.0f} msg/s",
                f"CPU {dedupe['plain_cpu_us']:.0f} us/msg",
            )
        )
        rows.append(
            (
                "worker, dedupe=True (PostgreSQL)",
                f"{dedupe['dedupe_per_second']:.0f} msg/s",
                f"CPU {dedupe['dedupe_cpu_us']:.0f} us/msg; "
                f"+{dedupe['dedupe_extra_wall_us']:.0f} us/msg of wall time",
            )
        )
    rows.append(
        (
            "peak RSS",
            f"receiver {result['receiver_rss_mib']:.0f} MiB",
            f"worker {result['worker_rss_mib']:.0f} MiB",
        )
    )
    return layout(rows, result["targets"], result.get("history"))


def layout(
    rows: list[tuple[str, str, str]],
    targets: dict[str, tuple[float, float, bool]],
    kept: dict[str, Any] | None = None,
) -> str:
    """The rows, then each target; with the history's figures `kept`, those too."""
    if kept:
        rows = [*rows, *history_rows(kept)]
    lines = [f"{a:<32} {b:<22} {c}" for a, b, c in rows]
    lines.append("")
    for name, (value, target, met) in targets.items():
        lines.append(f"{name:<32} {value:<22.3g} target {target:g}: {'met' if met else 'NOT met'}")
    if kept:
        lines.extend(plans(kept))
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    points = result["receiver"]
    x = [p["connections"] for p in points]
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(x, [p["per_second"] for p in points], "o-", color="tab:blue", label="req/s")
    left.axhline(result["ceiling_per_second"], color="tab:blue", ls=":", label="ceiling msg/s")
    left.set_xscale("log", base=2)
    left.set_xlabel("concurrent connections")
    left.set_ylabel("requests per second", color="tab:blue")
    right = left.twinx()
    right.plot(x, [p["p99_ms"] for p in points], "s--", color="tab:red", label="p99 ms")
    right.set_ylabel("p99 latency (ms)", color="tab:red")
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    fig.legend(loc="center right", bbox_to_anchor=(0.85, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True
