"""Example integration: fetch each changed placement from Avionté and sync it, once per message id.

Avionté's events are notifications: the ids are in `Resource`, and the current
state comes from its API. With AVIONTE_CLIENT_ID set (and the other AVIONTE_*
variables), each placement is fetched through the shared API client
(`consumers.avionte`); without it, `OfflineAvionteClient` answers with the ids it was
given, so the example runs anywhere.

Once per message id comes from the dedupe store, shared by every replica, when
DEDUPE_DATABASE_URL is set (`dedupe="optional"`); without it, each delivery runs.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import structlog

from consumers import Consumer, Event, Reject
from consumers.avionte import AvionteSettings, EntityGone, avionte, entity_of

log = structlog.get_logger("consumers.placement_sync")


class Fetcher(Protocol):
    """The part of an Avionté client this consumer needs."""

    async def fetch(self, event: Event) -> dict[str, Any]:
        """The current state of the entity the event names."""


class OfflineAvionteClient:
    """A stand-in that needs no network: answers with the ids it was asked for."""

    async def fetch(self, event: Event) -> dict[str, Any]:
        ref = entity_of(event)
        return {"PlacementId": ref.id, "TenantId": event.tenant_id, "Source": "offline"}


class PlacementSync:
    """Fetches the placement an event names and hands it downstream."""

    def __init__(self, client: Fetcher | None = None) -> None:
        self.client = client
        self._source: str | None = None

    def _client(self) -> Fetcher:
        if self.client is not None:
            return self.client
        # The real API if it is configured. Asked on each event, not kept: a test
        # (`consumers.testing.avionte_api`) configures it for a while.
        configured = AvionteSettings.configured(os.environ)
        source = "avionte" if configured else "offline"
        if source != self._source:
            self._source = source
            log.info("placement source", source=source)
        return avionte() if configured else OfflineAvionteClient()

    async def __call__(self, event: Event) -> None:
        placement_id = (event.resource or {}).get("PlacementId")
        if not isinstance(placement_id, int) or isinstance(placement_id, bool):
            # Retrying cannot add the id: dead-letter at once.
            raise Reject("Resource has no integer PlacementId")
        try:
            placement = await self._client().fetch(event)
        except EntityGone:
            log.info("placement gone; nothing to sync", placement_id=placement_id)
            return
        log.info("placement synced", placement_id=placement_id, fields=len(placement))


sync = PlacementSync()
consumer = Consumer("placement-sync", dedupe="optional")
consumer.on("placement_started", "placement_updated", "placement.extension.#")(sync)
