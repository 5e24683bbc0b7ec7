"""Streams that several processes create and use at once: the registry and the reports.

A stream exists before its writer runs. A publish or a consumer reaching it then has
RabbitMQ (3.10) close the whole connection with `INTERNAL_ERROR`: workers starting
together on a new prefix met that about one start in seven. So a stream is created by
one process at a time, which holds an exclusive queue meanwhile, and is used only once
it exists and nobody holds that queue.

A stream is read on the node the connection reached, from that node's replica; while
the replica is down or restarting after a node failure, or where there is none, the
broker refuses the consumer (`consume` raises `NoLocalReplica`, which a worker's start
retries).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue, ConsumerTag
from pamqp.common import FieldTable

# How long another process may take to create a stream before using it fails.
CREATED_WITHIN = 10.0
# A stream's writer runs a moment before the broker's record says where it is.
SETTLE = 0.25


class StreamNotCreated(TimeoutError):
    """Another process held a stream's creation longer than `CREATED_WITHIN`.

    A timeout: a worker's start retries it, as any other wait on the broker.
    """


# RabbitMQ's words when a stream has no running replica on the connection's node.
_NO_LOCAL_REPLICA = "does not have a replica on the local node"


class NoLocalReplica(ConnectionError):
    """The connection's node has no running replica of the stream to read from.

    RabbitMQ refuses the consumer with `PRECONDITION_FAILED` while the node's replica
    restarts after a node failure. Not a setting to fix: a connection error, which a
    worker's start retries as it does a lost connection.
    """


async def consume(
    queue: AbstractQueue,
    callback: Callable[[AbstractIncomingMessage], Awaitable[Any]],
    offset: int | str | datetime,
) -> ConsumerTag:
    """Read stream `queue` from `offset` (`x-stream-offset`); `NoLocalReplica` if it cannot."""
    try:
        return await queue.consume(callback, arguments={"x-stream-offset": offset})
    except aiormq.exceptions.ChannelPreconditionFailed as refused:
        if _NO_LOCAL_REPLICA not in str(refused):
            raise
        raise NoLocalReplica(f"{queue.name}: {_NO_LOCAL_REPLICA} (yet)") from refused


async def exists(connection: AbstractConnection, queue: str) -> bool:
    """Whether `queue` exists (and is not another connection's exclusive queue)."""
    return await _look(connection, queue) == "there"


async def _look(connection: AbstractConnection, queue: str) -> Literal["there", "absent", "held"]:
    """`queue` as a passive declare finds it; "held" when another connection's exclusive."""
    channel = await connection.channel()
    try:
        await channel.declare_queue(queue, passive=True)
    except aiormq.exceptions.ChannelLockedResource:
        return "held"
    except aio_pika.exceptions.ChannelClosed:
        return "absent"
    finally:
        if not channel.is_closed:
            await channel.close()
    return "there"


async def ready(
    connection: AbstractConnection, stream: str, arguments: FieldTable, *, create: bool
) -> bool:
    """Whether `stream` exists, once no process is still creating it; `create` it if need be."""
    deadline = asyncio.get_running_loop().time() + CREATED_WITHIN
    creating = f"{stream}.creating"
    while True:
        # The stream first: whoever creates it takes the queue before and releases it after.
        found = await exists(connection, stream)
        if await _look(connection, creating) == "absent":
            if found or not create:
                return found
            if await _create(connection, stream, arguments, creating):
                return True
        if asyncio.get_running_loop().time() > deadline:
            raise StreamNotCreated(f"{stream} was not created in {CREATED_WITHIN:g} s")
        await asyncio.sleep(0.05)


async def _create(
    connection: AbstractConnection, stream: str, arguments: FieldTable, creating: str
) -> bool:
    """Create `stream` holding `creating`; False when another process took it first."""
    channel = await connection.channel()
    try:
        try:
            await channel.declare_queue(creating, exclusive=True, auto_delete=True)
        except aiormq.exceptions.ChannelLockedResource:
            return False
        try:
            await channel.declare_queue(stream, durable=True, arguments=arguments)
            await asyncio.sleep(SETTLE)
        finally:
            # Released even when the broker refused the stream and closed the channel:
            # the connection lives on, and so would its exclusive queue.
            releasing = channel if not channel.is_closed else await connection.channel()
            await releasing.queue_delete(creating)
            if releasing is not channel:
                await releasing.close()
        return True
    finally:
        if not channel.is_closed:
            await channel.close()
