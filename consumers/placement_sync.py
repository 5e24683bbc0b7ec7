"""Example integration: fetch each changed placement from Avionté and sync it, once per message id.

Avionté's events are notifications: the ids are in `Resource`, and the current
state comes from its API. The API client is injected (`sync.client = ...`); until
a real one is configured, `OfflineAvionteClient` answers with the ids it was given.
"""

from __future__ import annotations

from collections import OrderedDict
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


class SeenMessages:
    """The most recent handled message ids, in memory, bounded.

    Enough for one process; replicas that must never repeat work share a store
    (a database table keyed by message id, for instance) instead.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def add(self, message_id: str) -> None:
        self._ids[message_id] = None
        self._ids.move_to_end(message_id)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)


class PlacementSync:
    """Fetches the placement named by an event and hands it downstream, once per message id."""

    def __init__(self, client: AvionteClient | None = None) -> None:
        self.client: AvionteClient = client or OfflineAvionteClient()
        self.seen = SeenMessages()

    async def __call__(self, event: Event) -> None:
        if event.message_id in self.seen:
            log.info("already synced; skipping a duplicate delivery")
            return
        placement_id = (event.resource or {}).get("PlacementId")
        if not isinstance(placement_id, int) or isinstance(placement_id, bool):
            # Retrying cannot add the id: dead-letter at once.
            raise Reject("Resource has no integer PlacementId")
        placement = await self.client.get_placement(event.tenant_id, placement_id)
        log.info("placement synced", placement_id=placement_id, fields=len(placement))
        self.seen.add(event.message_id)


sync = PlacementSync()
consumer = Consumer("placement-sync")
consumer.on("placement_started", "placement_updated", "placement.extension.#")(sync)
