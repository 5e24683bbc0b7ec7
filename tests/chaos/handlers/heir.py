"""The consumer that takes over from `retiring`: started just before it is pruned into."""

from __future__ import annotations

from consumers import Consumer, Event
from tests.chaos.handlers.common import RETRY_DELAYS, record

consumer = Consumer("heir", retry_delays=RETRY_DELAYS, concurrency=8)


@consumer.on("company.address.#")
async def handle(event: Event) -> None:
    record(consumer.name, event.message_id)
