"""The benchmark's no-op consumer with dedupe on: the same handler, a claim and a record each."""

from __future__ import annotations

from consumers import Consumer
from tests.bench.subjects.noop import nothing

noop_dedupe = Consumer("bench-noop-dedupe", concurrency=64, dedupe=True)
noop_dedupe.on("#")(nothing)
