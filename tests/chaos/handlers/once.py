"""Exactly once with dedupe: each handling is a row written in the claim's own transaction."""

from __future__ import annotations

import os

from consumers import Consumer, Event
from tests.chaos.handlers.common import RETRY_DELAYS, SeededFailure, fails_once

consumer = Consumer("once", retry_delays=RETRY_DELAYS, concurrency=16, dedupe=True)
TABLE = "chaos_applied"
WORKER = f"{os.getpid()}"


@consumer.on("placement.#", "talent.created")
async def apply(event: Event) -> None:
    if event.attempt == 1 and fails_once(consumer.name, event.message_id):
        raise SeededFailure("a seeded failure; the retry succeeds")
    async with event.transaction() as connection:
        await connection.execute(
            "INSERT INTO chaos_applied (message_id, worker) VALUES ($1, $2)",
            event.message_id,
            WORKER,
        )
