"""The renamed consumer: `crm-sync`, recording what it handles in `RECORD_FILE`."""

from __future__ import annotations

import os

from consumers import Consumer, Event
from tests.workers.recorder import consumer as recorder  # imported, and not run from here

consumer = Consumer("crm-sync", retry_delays=(1,))


def _append(line: str) -> None:
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as file:
        file.write(line)


@consumer.on("placement.#")
async def sync(event: Event) -> None:
    _append(event.message_id + "\n")


__all__ = ["consumer", "recorder"]
