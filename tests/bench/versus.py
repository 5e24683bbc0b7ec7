"""Ours against the naive receiver: alternated rounds at 64 connections, in one run.

Each round measures the naive receiver (on asyncio's loop, as written, and on uvloop,
as ours runs), ours at LOG_LEVEL=warning, ours at the default info, and ours with
every request the same delivery, one after another, every other round in reverse
order. The best of each counts, since this machine's speed drifts between rounds, and
every round's ratios are kept.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.bench import receiver
from tests.bench.receiver import measure, serving
from tests.bench.rounds import in_turn
from tests.support import open_bus

ROUNDS = 5
CONNECTIONS = 64


async def purge_all(prefix: str) -> None:
    """Empty what the receivers filled: the unrouted queue and the naive one."""
    connection, bus = await open_bus(prefix)
    async with connection:
        for name in (bus.names.unrouted, f"{prefix}.naive"):
            await (await bus.queue(name)).purge()


async def versus(prefix: str, workdir: Path, rounds_run: int = ROUNDS) -> dict[str, Any]:
    contenders = {
        "naive": await serving("tests.bench.subjects.naive", prefix, workdir),
        "naive_uvloop": await serving("tests.bench.subjects.naive_uvloop", prefix, workdir),
        "warning": await serving("service", prefix, workdir, level="warning"),
        "info": await serving("service", prefix, workdir, level="info"),
    }
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        for number in range(rounds_run):
            results = {}
            for name in in_turn([*contenders, "same"], number):
                # `same` is ours at warning, every request repeating one delivery.
                process, base = contenders["warning" if name == "same" else name]
                results[name] = await measure(
                    process,
                    f"{base}/webhooks/avionte",
                    CONNECTIONS,
                    same=name == "same",
                    seconds=receiver.ROUND_SECONDS,
                )
                await purge_all(prefix)
                print(
                    f"  round {number + 1} {name:<8} {results[name]['per_second']:8.0f}/s"
                    f"  p99 {results[name]['p99_ms']:.1f} ms",
                    flush=True,
                )
            rounds.append(results)
    finally:
        for process, _ in contenders.values():
            process.terminate()
            await process.wait()
    best = {
        name: max((r[name] for r in rounds), key=lambda point: point["per_second"])
        for name in ("naive", "naive_uvloop", "warning", "info", "same")
    }
    return {
        "rounds": rounds,
        "best": best,
        "warning_vs_naive": best["warning"]["per_second"] / best["naive"]["per_second"],
        "info_vs_naive": best["info"]["per_second"] / best["naive"]["per_second"],
        "info_vs_naive_uvloop": best["info"]["per_second"] / best["naive_uvloop"]["per_second"],
        "same_vs_distinct": best["same"]["per_second"] / best["warning"]["per_second"],
        "p99_vs_naive": best["warning"]["p99_ms"] / best["naive"]["p99_ms"],
        # Not a target: the naive receiver as written runs on asyncio's own loop.
        "warning_vs_naive_uvloop": best["warning"]["per_second"]
        / best["naive_uvloop"]["per_second"],
        "round_ratios": [
            {
                "warning_vs_naive": r["warning"]["per_second"] / r["naive"]["per_second"],
                "info_vs_naive": r["info"]["per_second"] / r["naive"]["per_second"],
                "info_vs_naive_uvloop": r["info"]["per_second"] / r["naive_uvloop"]["per_second"],
                "same_vs_distinct": r["same"]["per_second"] / r["warning"]["per_second"],
            }
            for r in rounds
        ],
    }


if __name__ == "__main__":
    import json
    import tempfile
    import uuid

    from tests.bench.processes import settle

    async def alone() -> None:
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        await settle()
        try:
            result = await versus(prefix, Path(tempfile.mkdtemp(prefix="bench-")))
        finally:
            connection, bus = await open_bus(prefix)
            async with connection:
                await bus.channel.queue_delete(f"{prefix}.naive")
                await bus.channel.exchange_delete(f"{prefix}.naive")
                await bus.remove_all()
        print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=1))

    asyncio.run(alone())
