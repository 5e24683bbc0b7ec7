"""`make bench`: the ceiling, the receiver, end-to-end latency, workers, memory and the history.

Prints one table, and writes `results/latest.json` and `results/latest.png`.
Ratios are computed within the run: absolute numbers drift on a shared machine.
`python -m tests.bench history` runs the receiver's load points and the history phase
alone, and writes `results/history.json`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import uvloop

from tests.bench.history import history
from tests.bench.history.report import accepted
from tests.bench.history.report import targets as history_targets
from tests.bench.processes import CHILDREN, run_json, settle
from tests.bench.receiver import SECONDS, end_to_end, purge, receiver_points, stubbed_point
from tests.bench.report import TARGETS, layout, plot, table
from tests.bench.tracing_cost import tracing_cost
from tests.bench.versus import versus
from tests.bench.workers import cleanup, dedupe_cost, workers
from tests.receivers import base_env
from tests.support import AMQP_URL

RESULTS = Path(__file__).parent / "results"


def publishing(module: str, prefix: str) -> dict[str, Any]:
    """The ceiling, or the receiver's publish path alone, from a process of its own."""
    return run_json(sys.executable, "-m", module, AMQP_URL, prefix, str(SECONDS), env=base_env())


async def main() -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        print("ceiling ...", flush=True)
        await settle()
        top = await asyncio.to_thread(publishing, "tests.bench.ceiling", prefix)
        print("publish path ...", flush=True)
        await settle()
        path = await asyncio.to_thread(publishing, "tests.bench.publish_path", prefix)
        await purge(prefix)
        print("receiver ...", flush=True)
        points, receiver_rss, base = await receiver_points(prefix, workdir)
        await purge(prefix)
        print("against the naive receiver ...", flush=True)
        against = await versus(prefix, workdir)
        print("tracing on and off ...", flush=True)
        traced = await tracing_cost(prefix, workdir)
        print("receiver with publishing stubbed ...", flush=True)
        stubbed = await stubbed_point(prefix, workdir)
        print("end to end ...", flush=True)
        e2e = await end_to_end(prefix, base, workdir)
        print("workers ...", flush=True)
        worker, worker_rss = await workers(prefix, workdir)
        print("workers with dedupe ...", flush=True)
        dedupe = await dedupe_cost(prefix, workdir)
        print("history ...", flush=True)
        kept = {
            **await history(f"{prefix}-history", workdir),
            "receiver": accepted(points),
            "ceiling_per_second": top["per_second"],
        }
    finally:
        await stop_children(prefix)
    at64 = next(p for p in points if p["connections"] == 64)
    values = {
        "warning_vs_naive": against["warning_vs_naive"],
        "info_vs_naive": against["info_vs_naive"],
        "same_vs_distinct": against["same_vs_distinct"],
        "p99_vs_naive": against["p99_vs_naive"],
        "receiver_vs_ceiling_at_64": at64["per_second"] / top["per_second"],
        "receiver_p99_ms_at_64": at64["p99_ms"],
        "e2e_p50_ms": e2e["p50_ms"],
        "worker_vs_raw": worker["worker_per_second"] / worker["raw_per_second"],
        "receiver_rss_mib": receiver_rss,
        "info_vs_naive_uvloop": against["info_vs_naive_uvloop"],
        "tracing_tenth_vs_off": traced["tenth_vs_off"],
        "tracing_on_vs_off": traced["on_vs_off"],
        "dedupe_vs_plain": dedupe["dedupe_vs_plain"],
    }
    higher_is_better = {
        "warning_vs_naive",
        "info_vs_naive",
        "same_vs_distinct",
        "receiver_vs_ceiling_at_64",
        "worker_vs_raw",
        "info_vs_naive_uvloop",
        "tracing_tenth_vs_off",
        "tracing_on_vs_off",
        "dedupe_vs_plain",
    }
    result = {
        "ceiling_per_second": top["per_second"],
        "ceiling_cpu_us": top["cpu_us"],
        "receiver": points,
        "receiver_stubbed": stubbed,
        "publish_path_per_second": path["per_second"],
        "publish_path_cpu_us": path["cpu_us"],
        # What the receiver would reach if its two halves cost no more together than apart;
        # not a bound: they do cost more together, and the ceiling runs on another loop.
        "sum_of_halves": top["cpu_us"] / (stubbed["cpu_us"] + path["cpu_us"]),
        "versus": against,
        "tracing": traced,
        "end_to_end": e2e,
        **worker,
        "dedupe": dedupe,
        "receiver_rss_mib": receiver_rss,
        "worker_rss_mib": worker_rss,
        "history": kept,
        "targets": {
            **{
                name: (
                    value,
                    TARGETS[name],
                    value >= TARGETS[name] if name in higher_is_better else value <= TARGETS[name],
                )
                for name, value in values.items()
            },
            **history_targets(kept),
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2, default=str))
    plotted = plot(result, RESULTS / "latest.png")
    print()
    print(table(result))
    print(
        f"\nwrote {RESULTS / 'latest.json'}" + (f" and {RESULTS / 'latest.png'}" if plotted else "")
    )


async def stop_children(prefix: str) -> None:
    # Children first: a worker still running would declare its queues again.
    for child in CHILDREN:
        if child.returncode is None:
            child.terminate()
            await child.wait()
    await cleanup(prefix)


async def history_only() -> None:
    """The receiver's load points, for the rate to compare with, then the history phase."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        print("receiver ...", flush=True)
        points, _, _ = await receiver_points(prefix, workdir)
        await purge(prefix)
        print("history ...", flush=True)
        kept = {**await history(f"{prefix}-history", workdir), "receiver": accepted(points)}
    finally:
        await stop_children(prefix)
    met = history_targets(kept)
    result = {"receiver": points, "history": kept, "targets": met}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "history.json").write_text(json.dumps(result, indent=2, default=str))
    print()
    print(layout([], met, kept))
    print(f"\nwrote {RESULTS / 'history.json'}")


# The ratios `make bench-quick` prints, with their targets (higher is better for each).
QUICK_TARGETS = {
    "info_vs_naive_uvloop": TARGETS["info_vs_naive_uvloop"],
    "tenth_vs_off": TARGETS["tracing_tenth_vs_off"],
    "on_vs_off": TARGETS["tracing_on_vs_off"],
    "dedupe_vs_plain": TARGETS["dedupe_vs_plain"],
    "worker_vs_raw": TARGETS["worker_vs_raw"],
}


async def quick() -> None:
    """The ratios alone, from one round of each, 5 s a load point: about two minutes."""
    from tests.bench import receiver

    receiver.SECONDS = receiver.ROUND_SECONDS = 5.0
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        print("against the naive receiver ...", flush=True)
        against = await versus(prefix, workdir, rounds_run=1)
        print("tracing off, at 10 % and at 100 % ...", flush=True)
        traced = await tracing_cost(prefix, workdir, rounds=1, control=False)
        print("workers ...", flush=True)
        worker, _ = await workers(prefix, workdir, rounds=1)
        print("workers with dedupe ...", flush=True)
        dedupe = await dedupe_cost(prefix, workdir, rounds=1)
    finally:
        await stop_children(prefix)
    ratios = {
        "info_vs_naive_uvloop": against["info_vs_naive_uvloop"],
        "tenth_vs_off": traced["tenth_vs_off"],
        "on_vs_off": traced["on_vs_off"],
        "dedupe_vs_plain": dedupe["dedupe_vs_plain"],
        "worker_vs_raw": worker["worker_per_second"] / worker["raw_per_second"],
    }
    RESULTS.mkdir(exist_ok=True)
    kept = {"ratios": ratios, "versus": against, "tracing": traced, "dedupe": dedupe, **worker}
    (RESULTS / "quick.json").write_text(json.dumps(kept, indent=2, default=str))
    print()
    print(f"{'ratio':<24}{'value':>8}{'target':>9}  met")
    for name, value in ratios.items():
        target = QUICK_TARGETS[name]
        print(f"{name:<24}{value:8.2f}{target:9.2f}  {'yes' if value >= target else 'no'}")
    print(f"\nwrote {RESULTS / 'quick.json'}")


PHASES = {"all": main, "history": history_only, "quick": quick}


if __name__ == "__main__":
    chosen = sys.argv[1] if len(sys.argv) > 1 else "all"
    if chosen not in PHASES:
        sys.exit(f"usage: python -m tests.bench [{'|'.join(PHASES)}]")
    uvloop.run(PHASES[chosen]())
