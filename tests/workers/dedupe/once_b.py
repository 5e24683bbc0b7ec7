"""Another consumer with dedupe on, with `once`'s handler: its records are its own."""

from __future__ import annotations

from consumers import Consumer
from tests.workers.dedupe.once import handle

consumer = Consumer("once-b", retry_delays=(0.2,), dedupe=True)
consumer.on("#")(handle)
