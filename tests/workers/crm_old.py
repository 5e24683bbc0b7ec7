"""A consumer under its old name, before it was renamed to `crm_new`'s `crm-sync`."""

from __future__ import annotations

from consumers import Consumer, Event

consumer = Consumer("crm-old", retry_delays=(1,))


@consumer.on("placement.#")
async def sync(event: Event) -> None:
    return None
