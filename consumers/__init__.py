"""Consumer workers: each consumer owns a queue and reacts to the Avionté events it binds.

from consumers import Consumer, Event, Reject

consumer = Consumer("placement-sync")

@consumer.on("placement_updated", "placement.extension.#")
async def sync(event: Event) -> None: ...
"""

from consumers.consumer import Consumer
from consumers.errors import Reject, RetryLater
from consumers.event import Event

__all__ = ["Consumer", "Event", "Reject", "RetryLater"]
