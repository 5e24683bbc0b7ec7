"""At least once, no dedupe: a seeded share fails once, and its retry succeeds."""

from __future__ import annotations

import os

from consumers import Consumer, Event
from tests.chaos.handlers.common import RETRY_DELAYS, SeededFailure, fails_once, record, sabotaged

consumer = Consumer("plain", retry_delays=RETRY_DELAYS, concurrency=16)
BROKEN = os.environ.get("CHAOS_BREAK") == "skip"


@consumer.on("placement.#", "talent.#", "company.updated")
async def handle(event: Event) -> None:
    if BROKEN and sabotaged(event.message_id):
        return  # the deliberately broken build: acked, never run
    if event.attempt == 1 and fails_once(consumer.name, event.message_id):
        raise SeededFailure("a seeded failure; the retry succeeds")
    record(consumer.name, event.message_id)
