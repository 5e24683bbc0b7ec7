"""The consumer the run retires midway (`prune retiring --into heir`)."""

from __future__ import annotations

from consumers import Consumer, Event
from tests.chaos.handlers.common import RETRY_DELAYS, SeededFailure, fails_once, record

consumer = Consumer("retiring", retry_delays=RETRY_DELAYS, concurrency=8)


@consumer.on("company.address.#")
async def handle(event: Event) -> None:
    if event.attempt == 1 and fails_once(consumer.name, event.message_id):
        raise SeededFailure("a seeded failure; the retry succeeds")
    record(consumer.name, event.message_id)
