"""Avionté's REST API for consumers: fetch what an event points to, in one call.

```python
from consumers import Consumer, Event
from consumers.avionte import EntityGone, avionte

consumer = Consumer("placement-sync")


@consumer.on("placement_updated")
async def sync(event: Event) -> None:
    try:
        placement = await avionte().fetch(event)
    except EntityGone:
        return  # deleted since the event: nothing to sync
    await push(placement)
```
"""

from consumers.avionte.client import AvionteClient
from consumers.avionte.entities import EVENTS, EntityRef, entity_of
from consumers.avionte.errors import (
    AvionteError,
    AvionteRejected,
    AvionteUnavailable,
    EntityGone,
    UnmappedEvent,
)
from consumers.avionte.settings import AvionteSettings
from consumers.runtime.resources import shared


def avionte() -> AvionteClient:
    """The process's client, configured from AVIONTE_* on first use and shared by all."""
    return shared("avionte", AvionteClient.from_env)


__all__ = [
    "EVENTS",
    "AvionteClient",
    "AvionteError",
    "AvionteRejected",
    "AvionteSettings",
    "AvionteUnavailable",
    "EntityGone",
    "EntityRef",
    "UnmappedEvent",
    "avionte",
    "entity_of",
]
