"""The receiver with a publisher that confirms at once: what the HTTP side costs alone.

Usage: python -m tests.bench.subjects.stub_receiver, configured like `python -m service`.
Nothing reaches a broker, so it answers 200 without the guarantee; the benchmark
uses it only to split the receiver's cost between HTTP and publishing.
"""

from __future__ import annotations

import os

import uvloop

from service.http.server import serve
from service.observability.logs import configure_logging
from service.publishing.publisher import BrokerState
from service.settings import Settings
from service.shared.bus import Outgoing


class InstantPublisher:
    """Confirms every message at once and keeps none of them."""

    ready = True
    state: BrokerState = "connected"

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def publish(self, message: Outgoing) -> None:
        pass


if __name__ == "__main__":
    settings = Settings.from_env(os.environ)
    configure_logging(settings.log_level, settings.log_format)
    uvloop.run(serve(settings, publisher=InstantPublisher()))
