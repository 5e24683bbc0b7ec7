"""`MemoryDedupe`: once per message id, kept in memory, for `deliver`.

It answers the worker's questions (`consumers.runtime.fate.Once`) as the PostgreSQL
store does (`consumers.dedupe`): a message id whose handling succeeded is a duplicate;
a handling that raised records nothing but the handlers that succeeded, so its retry
runs only the others; while one handling of an id runs, another waits for it.

`event.transaction()` writes to a database in the PostgreSQL store. Here it needs one
too: a `MemoryDedupe(database=pool)` runs the handler's block in a transaction on a
connection of `pool` (an `asyncpg` pool of your test database) and records the
handler's success when that commits. Without a database, `event.transaction()` raises
a `RuntimeError` saying so, and the handling fails like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import asyncpg

from consumers.dedupe import Claim, Connection


@dataclass(slots=True)
class _Record:
    handled: set[str] = field(default_factory=set)
    done: bool = False
    running: asyncio.Event | None = None  # set when the running handling ends


class MemoryDedupe:
    """Records of handled message ids, per consumer; `deliver` shares one per event loop."""

    scope = "memory"

    def __init__(self, database: asyncpg.Pool | None = None) -> None:
        """`database`: where `event.transaction()` writes; without one it raises."""
        self.database = database
        self._records: dict[tuple[str, str], _Record] = {}

    def __repr__(self) -> str:
        done = sum(record.done for record in self._records.values())
        return f"MemoryDedupe(done={done}, database={self.database is not None})"

    def done(self, consumer: str, message_id: str) -> bool:
        """Whether a handling of `message_id` by the consumer named `consumer` succeeded."""
        record = self._records.get((consumer, message_id))
        return record is not None and record.done

    async def claim(self, consumer: str, message_id: str) -> Claim | None:
        """A claim, or None when a handling of the id succeeded already."""
        while True:
            record = self._records.setdefault((consumer, message_id), _Record())
            if record.done:
                return None
            if record.running is None:
                record.running = asyncio.Event()
                owner = uuid.uuid4().hex[:12]
                return Claim(self, consumer, message_id, owner, frozenset(record.handled))
            await record.running.wait()

    async def finish(self, claim: Claim) -> None:
        record = self._end(claim)
        record.done = claim.done = True

    async def release(self, claim: Claim, succeeded: Sequence[str]) -> None:
        self._end(claim).handled.update(succeeded)

    def holding(self, claim: Claim) -> contextlib.AbstractContextManager[None]:
        """A claim in memory does not run out: nothing to renew."""
        return contextlib.nullcontext()

    def _end(self, claim: Claim) -> _Record:
        record = self._records[claim.consumer, claim.message_id]
        if record.running is not None:
            record.running.set()
            record.running = None
        return record

    @contextlib.asynccontextmanager
    async def transaction(self, claim: Claim) -> AsyncIterator[Connection]:
        """The handler's block in a transaction on `database`; its success recorded on commit."""
        handler, last = claim.committing()
        if self.database is None:
            raise RuntimeError(
                "event.transaction() writes to PostgreSQL: give deliver a store with a "
                "database, deliver(..., dedupe=MemoryDedupe(database=await "
                "asyncpg.create_pool(TEST_DATABASE_URL)))"
            )
        async with self.database.acquire() as connection, connection.transaction():
            yield connection
        self._records[claim.consumer, claim.message_id].handled.add(handler)
        claim.committed(handler, last)
        if last:  # the message is done: who waits on this handling finds a duplicate
            self._end(claim).done = True
