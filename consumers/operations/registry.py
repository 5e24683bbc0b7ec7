"""The registry: which consumers have queues under a prefix, and the patterns they bind.

AMQP can list neither queues nor bindings, so the consumers write them down in the
stream `{prefix}.registry.log`, a log that readers consume without taking anything:
any number of readers at once see the same registry, and none can disturb another.

- A worker appends its consumer's record when it starts: its queues and the patterns
  it has just bound. It appends before it unbinds what the code no longer names, so
  the registry never names a pattern that is not bound (`consumers tail` relies on it).
- `consumers prune` appends the record with no patterns once it has unbound, and a
  `gone` record once every queue of the consumer is deleted.

The registry is the fold of the log: per consumer, the union of the queues it ever
named, and the patterns of its latest record. A stream has no end to read to, so a
reader appends a marker of its own and reads from the first record up to it.

Registries of earlier versions (a quorum queue `{prefix}.registry` rewritten on every
read, and a queue `{prefix}.{name}.bindings` per consumer) are moved into the log the
first time anything touches the registry, then deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)
from pamqp.common import FieldTable

from consumers.consumer import Consumer
from consumers.runtime import streams
from consumers.topology import ConsumerQueues, declare_consumer_topology, unbind
from service.shared.bus import BusNames

STREAM: FieldTable = {"x-queue-type": "stream"}
# Stream consumers must set a prefetch; records are small.
PREFETCH = 1000
# How long a reader waits for its own marker: only a broker in trouble takes this long.
READ_TIMEOUT = 30.0


class RegistryUnreadable(Exception):
    """The registry log could not be read to its end in time."""


@dataclass(frozen=True, slots=True)
class Entry:
    """What the registry knows of one consumer."""

    queues: frozenset[str]
    patterns: tuple[str, ...]  # () once pruned: nothing bound


Entries = dict[str, Entry]


def registry_stream(names: BusNames) -> str:
    return f"{names.prefix}.registry.log"


def legacy_queue(names: BusNames) -> str:
    """Where earlier versions kept the registry."""
    return f"{names.prefix}.registry"


def record_for(prefix: str, consumer: Consumer) -> dict[str, Any]:
    """A starting consumer's record: every queue it declares and the patterns it binds."""
    queues = ConsumerQueues(prefix, consumer.name)
    retries = sorted({queues.retry(delay) for delay in consumer.retry_delays})
    return {
        "consumer": consumer.name,
        "queues": [queues.main, queues.dead, *retries],
        "patterns": list(consumer.patterns),
    }


def unbound_record(name: str) -> dict[str, Any]:
    return {"consumer": name, "queues": [], "patterns": []}


def gone_record(name: str) -> dict[str, Any]:
    return {"consumer": name, "gone": True}


@dataclass(slots=True)
class _Fold:
    """The registry as the records read so far make it."""

    queues: dict[str, set[str]] = field(default_factory=dict)
    patterns: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def apply(self, record: dict[str, Any]) -> None:
        name = record.get("consumer")
        if not isinstance(name, str):
            return
        if record.get("gone"):
            self.queues.pop(name, None)
            self.patterns.pop(name, None)
            return
        queues = record.get("queues")
        self.queues.setdefault(name, set()).update(
            str(q) for q in (queues if isinstance(queues, list) else [])
        )
        patterns = record.get("patterns")
        if isinstance(patterns, list):
            self.patterns[name] = tuple(str(p) for p in patterns)

    def entries(self) -> Entries:
        return {
            name: Entry(frozenset(queues), self.patterns.get(name, ()))
            for name, queues in sorted(self.queues.items())
        }


# One reader or writer at a time per connection: each opens and closes channels (a
# passive declare of a missing queue has the broker close one), and many of those at
# once on one connection were seen to end it ("expected 'channel.open'"). Processes
# still read and write at the same time, each on its own connection.
_TURNS: weakref.WeakKeyDictionary[AbstractConnection, asyncio.Lock] = weakref.WeakKeyDictionary()


def _turn(connection: AbstractConnection) -> asyncio.Lock:
    return _TURNS.setdefault(connection, asyncio.Lock())


async def _publish(channel: AbstractChannel, names: BusNames, records: Iterable[object]) -> None:
    for record in records:
        await channel.default_exchange.publish(
            aio_pika.Message(orjson.dumps(record), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=registry_stream(names),
            mandatory=True,
        )


async def append(connection: AbstractConnection, names: BusNames, *records: object) -> None:
    """Append `records` to the log, each confirmed by the broker; create the log if need be."""
    async with _turn(connection):
        await _migrate(connection, names)
        await streams.ready(connection, registry_stream(names), STREAM, create=True)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            await _publish(channel, names, records)
        finally:
            await channel.close()


class Follower:
    """Reads the log from its first record and keeps reading as records arrive.

    `sync()` returns once everything appended before it was called has been read.
    """

    def __init__(self, connection: AbstractConnection, names: BusNames) -> None:
        self._connection = connection
        self._names = names
        self._fold = _Fold()
        self._awaited: dict[str, asyncio.Future[None]] = {}
        self._channel: AbstractChannel | None = None

    @property
    def entries(self) -> Entries:
        return self._fold.entries()

    def patterns(self) -> set[str]:
        """Every pattern a registered consumer binds now."""
        return {p for entry in self._fold.entries().values() for p in entry.patterns}

    async def start(self) -> bool:
        """Begin reading; False (and nothing created) when the prefix has no registry."""
        await _migrate(self._connection, self._names)
        if not await streams.ready(
            self._connection, registry_stream(self._names), STREAM, create=False
        ):
            return False
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._channel = channel
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.get_queue(registry_stream(self._names), ensure=False)
        await streams.consume(queue, self._read, "first")
        return True

    async def sync(self) -> None:
        """Wait until every record appended before this call has been read."""
        if self._channel is None:
            return
        marker = uuid.uuid4().hex
        seen = asyncio.get_running_loop().create_future()
        self._awaited[marker] = seen
        try:
            await _publish(self._channel, self._names, [{"marker": marker}])
            async with asyncio.timeout(READ_TIMEOUT):
                await seen
        except TimeoutError:
            raise RegistryUnreadable(
                f"{registry_stream(self._names)} was not read to its end in {READ_TIMEOUT:g} s"
            ) from None
        finally:
            self._awaited.pop(marker, None)

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _read(self, message: AbstractIncomingMessage) -> None:
        try:
            record = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            marker = record.get("marker")
            if isinstance(marker, str):
                seen = self._awaited.get(marker)
                if seen is not None and not seen.done():
                    seen.set_result(None)
            else:
                self._fold.apply(record)
        # Stream consumers ack only to receive more: nothing is removed. A reader done
        # with the log closes its channel while more may still be arriving.
        with contextlib.suppress(aio_pika.exceptions.ChannelInvalidStateError):
            await message.ack()


async def read(connection: AbstractConnection, names: BusNames) -> Entries:
    """The whole registry now; empty (and nothing created) when the prefix has none."""
    async with _turn(connection):
        follower = Follower(connection, names)
        try:
            if not await follower.start():
                return {}
            await follower.sync()
            return follower.entries
        finally:
            await follower.close()


async def enrol(
    connection: AbstractConnection, channel: AbstractChannel, names: BusNames, consumer: Consumer
) -> AbstractQueue:
    """Declare `consumer`'s queues and bindings, record them, and unbind what it dropped.

    The record goes in before anything is unbound, so the registry never names a pattern
    that is not bound. Returns the consumer's main queue.
    """
    before = (await read(connection, names)).get(consumer.name)
    main = await declare_consumer_topology(channel, names, consumer)
    await append(connection, names, record_for(names.prefix, consumer))
    if before is not None:
        await unbind(
            channel, main.name, names.events, set(before.patterns) - set(consumer.patterns)
        )
    return main


async def known_consumers(connection: AbstractConnection, names: BusNames) -> list[str]:
    """The names of every consumer the registry holds, sorted."""
    return sorted(await read(connection, names))


async def _migrate(connection: AbstractConnection, names: BusNames) -> None:
    """Move an earlier version's registry into the log, then delete it."""
    if not await streams.exists(connection, legacy_queue(names)):
        return
    await streams.ready(connection, registry_stream(names), STREAM, create=True)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        legacy = await channel.declare_queue(legacy_queue(names), passive=True)
        taken: list[AbstractIncomingMessage] = []
        while (message := await legacy.get(no_ack=False, fail=False)) is not None:
            taken.append(message)
        listed: dict[str, set[str]] = {}
        for message in taken:
            for name, queues in _legacy_entries(message.body).items():
                listed.setdefault(name, set()).update(queues)
        records: list[dict[str, Any]] = []
        for name, its_queues in sorted(listed.items()):
            own = ConsumerQueues(names.prefix, name)
            patterns = await _legacy_patterns(connection, own.bindings)
            kept = sorted(its_queues - {own.bindings})
            records.append({"consumer": name, "queues": kept, "patterns": sorted(patterns)})
        # Written before anything is acked or deleted: a crash here loses no name.
        await _publish(channel, names, records)
        for message in taken:
            await message.ack()
        if taken:
            # A concurrent migration saw nothing and deletes nothing: only the one that
            # moved the records removes what held them.
            for name in listed:
                await channel.queue_delete(ConsumerQueues(names.prefix, name).bindings)
            await channel.queue_delete(legacy_queue(names))
    finally:
        if not channel.is_closed:
            await channel.close()


async def _legacy_patterns(connection: AbstractConnection, record_queue: str) -> set[str]:
    patterns: set[str] = set()
    if not await streams.exists(connection, record_queue):
        return patterns
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(record_queue, passive=True)
        # Taken for good: the queue is deleted once its patterns are in the log.
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            with contextlib.suppress(orjson.JSONDecodeError, TypeError):
                patterns.update(str(p) for p in orjson.loads(message.body))
    finally:
        await channel.close()
    return patterns


def _legacy_entries(body: bytes) -> dict[str, list[str]]:
    try:
        consumers = orjson.loads(body).get("consumers", {})
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    if not isinstance(consumers, dict):
        return {}
    return {
        str(name): [str(queue) for queue in queues]
        for name, queues in consumers.items()
        if isinstance(queues, list)
    }
