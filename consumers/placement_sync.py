"""Example integration: fetch each changed placement from Avionté and sync it, once per message id.

Avionté's events are notifications: the ids are in `Resource`, and the current
state comes from its API. The API client is injected (`sync.client = ...`); until
a real one is configured, `OfflineAvionteClient` answers with the ids it was given.

Once per message id comes from the dedupe store, shared by every replica, when
DEDUPE_DATABASE_URL is set (`dedupe="optional"`); without it, each delivery runs.
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog

from consumers import Consumer, Event, Reject

log = structlog.get_logger("consumers.placement_sync")


class AvionteClient(Protocol):
    """The part of Avionté's API this consumer needs."""

    async def get_placement(self, tenant_id: int | None, placement_id: int) -> dict[str, Any]:
        """The placement's current state."""


class OfflineAvionteClient:
    """A stand-in that needs no network: returns the ids it was asked for."""

    async def get_placement(self, tenant_id: int | None, placement_id: int) -> dict[str, Any]:
        return {"PlacementId": placement_id, "TenantId": tenant_id, "Source": "offline"}


class PlacementSync:
    """Fetches the placement named by an event and hands it downstream."""

    def __init__(self, client: AvionteClient | None = None) -> None:
        self.client: AvionteClient = client or OfflineAvionteClient()

    async def __call__(self, event: Event) -> None:
        placement_id = (event.resource or {}).get("PlacementId")
        if not isinstance(placement_id, int) or isinstance(placement_id, bool):
            # Retrying cannot add the id: dead-letter at once.
            raise Reject("Resource has no integer PlacementId")
        placement = await self.client.get_placement(event.tenant_id, placement_id)
        log.info("placement synced", placement_id=placement_id, fields=len(placement))


sync = PlacementSync()
consumer = Consumer("placement-sync", dedupe="optional")
consumer.on("placement_started", "placement_updated", "placement.extension.#")(sync)
