"""A consumer for two tenants only; it keeps what it handled in `handled`."""

from __future__ import annotations

from consumers import Consumer, Event

consumer = Consumer("two-tenants", retry_delays=())
handled: list[tuple[str, int | None]] = []


@consumer.on("placement_updated", tenants=[6, 12])
async def sync(event: Event) -> None:
    handled.append((event.message_id, event.tenant_id))
