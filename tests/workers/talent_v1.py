"""`talent-watch`, first version: bound to talent events."""

from __future__ import annotations

from consumers import Consumer, Event

consumer = Consumer("talent-watch", retry_delays=())


@consumer.on("talent.#")
async def watch(event: Event) -> None:
    return None
