"""The history figures in the benchmark's table, and their targets."""

from __future__ import annotations

from typing import Any

TARGETS = {
    "history_vs_receiver": 1.0,
    "search_day_p95_ms": 100.0,
    "search_id_p95_ms": 10.0,
    "replay_per_second": 2000.0,
}
HIGHER_IS_BETTER = {"history_vs_receiver", "replay_per_second"}


def accepted(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The receiver's best load point: deliveries answered `200` a second."""
    best = max(points, key=lambda p: (p["requests"] - p["non200"]) / p["seconds"])
    rate = (best["requests"] - best["non200"]) / best["seconds"]
    return {"per_second": rate, "connections": best["connections"]}


def targets(kept: dict[str, Any]) -> dict[str, tuple[float, float, bool]]:
    values = {
        "history_vs_receiver": kept["write"]["per_second"] / kept["receiver"]["per_second"],
        "search_day_p95_ms": kept["search"]["day"]["p95_ms"],
        "search_id_p95_ms": kept["search"]["id"]["p95_ms"],
        "replay_per_second": kept["replay"]["per_second"],
    }
    return {
        name: (
            value,
            TARGETS[name],
            value >= TARGETS[name] if name in HIGHER_IS_BETTER else value <= TARGETS[name],
        )
        for name, value in values.items()
    }


def rows(kept: dict[str, Any]) -> list[tuple[str, str, str]]:
    write, receiver = kept["write"], kept["receiver"]
    made, day, one = kept["generated"], kept["search"]["day"], kept["search"]["id"]
    replayed = kept["replay"]
    return [
        (
            f"history writes, best of {len(kept['write_rounds'])}",
            f"{write['per_second']:.0f} events/s",
            f"{write['events']:,} events; CPU {write['worker_cpu_us']:.0f} us/event worker,"
            f" {write['postgres_cpu_us']:.0f} PostgreSQL; {write['rows_per_batch']:.0f} a batch",
        ),
        (
            "receiver accepted (best point)",
            f"{receiver['per_second']:.0f} req/s",
            f"at {receiver['connections']} connections",
        ),
        (
            f"history generated, {kept['rows']:,}",
            f"{sum(made.values()):.0f} s",
            f"insert {made['insert_seconds']:.0f} s, indexes {made['index_seconds']:.0f} s,"
            f" ANALYZE {made['analyze_seconds']:.0f} s; whole phase {kept['seconds']:.0f} s",
        ),
        (
            "search: tenant, event, one day",
            f"p50 {day['p50_ms']:.1f} ms",
            f"p95 {day['p95_ms']:.1f} ms, {day['runs']} runs; days of"
            f" {day['matching'][0]}-{day['matching'][1]} matching",
        ),
        (
            "search: one message id",
            f"p50 {one['p50_ms']:.1f} ms",
            f"p95 {one['p95_ms']:.1f} ms, {one['runs']} runs",
        ),
        (
            f"replay, best of {len(kept['replay_rounds'])}",
            f"{replayed['per_second']:.0f} events/s",
            f"{replayed['replayed']:,} events, {replayed['queued']:,} queued;"
            f" CPU {replayed['cpu_us']:.0f} us/event"
            + (
                f"; {replayed['per_second'] / kept['ceiling_per_second']:.2f} of the ceiling"
                if "ceiling_per_second" in kept
                else ""
            ),
        ),
    ]


PLAN_LINES = 12


def plans(kept: dict[str, Any]) -> list[str]:
    """EXPLAIN ANALYZE of each kind of search whose target was missed: its top, its times.

    The whole plans are in the JSON results.
    """
    lines = []
    for name, label in (("day", "search_day_p95_ms"), ("id", "search_id_p95_ms")):
        if kept["search"][name]["p95_ms"] <= TARGETS[label]:
            continue
        lines.append(f"\n{label} not met; EXPLAIN ANALYZE of each kind of search:")
        for plan in kept["search"][name]["plans"]:
            lines.append("")
            lines.extend(f"  {line}" for line in plan[:PLAN_LINES])
            if len(plan) > PLAN_LINES:
                lines.append(f"  ... ({len(plan) - PLAN_LINES} more lines)")
                lines.extend(f"  {line}" for line in plan if line.endswith(" ms"))
    return lines
