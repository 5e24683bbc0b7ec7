"""One publish per message id in flight on a channel, because aiormq matches returns by id.

aiormq tells a returned message from the others by its message id alone: it keeps
the newest delivery tag per id. With two publishes of one id in flight on one
channel, a return can be charged to the wrong one, so one that was stored fails
and one that was not succeeds. Avionté's retries share an id, and so do a retry
copy and a dead-letter copy of one event. A second publish of an id therefore
waits here until the first one is settled.
"""

from __future__ import annotations

import asyncio


class OnePerId:
    """Lets one publish per message id through at a time; the others wait their turn."""

    def __init__(self) -> None:
        self._publishing: dict[str, asyncio.Future[None]] = {}

    async def acquire(self, message_id: str) -> asyncio.Future[None]:
        """Wait until no publish of `message_id` is in flight; pass the result to `release`."""
        while (earlier := self._publishing.get(message_id)) is not None:
            await asyncio.shield(earlier)
        mine = self._publishing[message_id] = asyncio.get_running_loop().create_future()
        return mine

    def release(self, message_id: str, mine: asyncio.Future[None]) -> None:
        """The publish of `message_id` is settled; let the next one go."""
        if self._publishing.get(message_id) is mine:
            del self._publishing[message_id]
        mine.set_result(None)
