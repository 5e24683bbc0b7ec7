"""`talent-watch`, second version: the same consumer, now bound to contact events only."""

from __future__ import annotations

from consumers import Consumer, Event

consumer = Consumer("talent-watch", retry_delays=())


@consumer.on("contact.#")
async def watch(event: Event) -> None:
    return None
