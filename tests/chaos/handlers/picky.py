"""Rejects a known share (dead letters on purpose); handles the rest at least once."""

from __future__ import annotations

from consumers import Consumer, Event, Reject
from tests.chaos.handlers.common import RETRY_DELAYS, record, rejected

consumer = Consumer("picky", retry_delays=RETRY_DELAYS, concurrency=8)


@consumer.on("placement.updated", "talent.#", "company.updated")
async def handle(event: Event) -> None:
    if rejected(consumer.name, event.message_id):
        raise Reject("rejected on purpose: the ledger expects this dead letter")
    record(consumer.name, event.message_id)
