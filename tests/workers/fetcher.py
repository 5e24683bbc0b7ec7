"""A consumer that fetches what each event names from Avionté and records it in `RECORD_FILE`."""

from __future__ import annotations

import json
import os

from consumers import Consumer, Event
from consumers.avionte import avionte

consumer = Consumer("fetcher", retry_delays=(0.5, 1, 2), concurrency=16)


def _record(event: Event, entity: dict[str, object]) -> None:
    line = {"message_id": event.message_id, "attempt": event.attempt, "entity": entity}
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")


@consumer.on("placement.#", "talent.#", "company.#", "contact.#")
async def fetch(event: Event) -> None:
    _record(event, await avionte().fetch(event))
