"""An in-memory publisher for HTTP unit tests; bus behaviour is tested against RabbitMQ."""

from __future__ import annotations

from service.publishing.publisher import BrokerState
from service.shared.bus import Outgoing
from service.shared.errors import PublishFailed


class MemoryPublisher:
    """Records what it is asked to publish; can be told to be down or to fail."""

    def __init__(self) -> None:
        self.ready = True
        self.failure: PublishFailed | None = None
        self.published: list[Outgoing] = []
        self.started = False
        self.closed = False

    @property
    def state(self) -> BrokerState:
        return "connected" if self.ready else "disconnected"

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def publish(self, message: Outgoing) -> None:
        if self.failure is not None:
            raise self.failure
        self.published.append(message)
