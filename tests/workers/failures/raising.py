"""A consumer whose handler fails some calls down, as a test asks through each event.

`Leak`: raise, two helper calls down, an error whose message holds that text. `Depth`:
raise from that many nested calls, two functions in turn, so no line repeats.
"""

from __future__ import annotations

from consumers import Consumer, Event

consumer = Consumer("raising", retry_delays=())


@consumer.on("#")
async def handle(event: Event) -> None:
    payload = event.payload
    if "Depth" in payload:
        _ping(int(payload["Depth"]))
    _connect(str(payload.get("Leak", "")))


def _connect(text: str) -> None:
    _log_in(text)


def _log_in(text: str) -> None:
    raise ConnectionRefusedError(f"the CRM refused {text}")


def _ping(depth: int) -> None:
    if depth <= 1:
        raise ValueError("the bottom of the stack")
    _pong(depth - 1)


def _pong(depth: int) -> None:
    _ping(depth - 1)
