"""Shared test helpers: credentials, fixtures on disk, signing, and a view of the bus."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from consumers.consumer import Consumer
from consumers.topology import ConsumerQueues
from service.settings import Settings
from service.shared.bus import AuthMethod, BusNames, Receipt, event_message
from service.shared.envelope import parse
from service.shared.environment import Secret
from service.shared.topology import declare_receiver_topology

FIXTURES = Path(__file__).parent / "fixtures" / "avionte"
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

API_KEYS = ("test-api-key-Alpha-7f3c", "test-api-key-Bravo-19ad")
SHARED_SECRETS = ("test-shared-Secret-Charlie-5be1", "test-shared-Secret-Delta-0c44")
ALL_SECRETS = (*API_KEYS, *SHARED_SECRETS)
# Every credential any test configures; the suite's logs are searched for each.
SCANNED_SECRETS = (
    *ALL_SECRETS,
    "k-31337",
    "s-31337",
    "broker-pw-31337",
    "api-key-31337",
    "dedupe-pw-31337",
    "client-secret-31337",
    "avionte-key-31337",
)

AUTH_METHODS = ("api_key", "shared_secret", "hmac_hex", "hmac_base64")


def consumer_queue_names(prefix: str, consumer: Consumer) -> list[str]:
    """Every queue a worker declares for `consumer`."""
    queues = ConsumerQueues(prefix, consumer.name)
    return [queues.main, queues.dead, queues.bindings] + [
        queues.retry(delay) for delay in consumer.retry_delays
    ]


def fixture_bodies() -> dict[str, bytes]:
    """Every sample delivery, by file stem, as raw bytes."""
    return {path.stem: path.read_bytes() for path in sorted(FIXTURES.glob("*.json"))}


def with_correlation_id(body: bytes, correlation_id: str) -> bytes:
    """A fixture re-serialised with a fresh CorrelationId (for unique deliveries)."""
    payload = json.loads(body)
    payload["CorrelationId"] = correlation_id
    return json.dumps(payload).encode()


def sign_hex(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_base64(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def auth_headers(method: str, body: bytes, *, index: int = 0) -> dict[str, str]:
    """Headers that authenticate `body` by `method`, with the `index`-th configured value."""
    if method == "api_key":
        return {"X-api-key": API_KEYS[index]}
    secret = SHARED_SECRETS[index]
    if method == "shared_secret":
        return {"X-Payload-Signature": secret}
    if method == "hmac_hex":
        return {"X-Payload-Signature": sign_hex(body, secret)}
    if method == "hmac_base64":
        return {"X-Payload-Signature": sign_base64(body, secret)}
    raise ValueError(method)


def receiver_settings(prefix: str, **overrides: Any) -> Settings:
    """Settings for an in-process receiver with both rotation keys and both secrets."""
    values: dict[str, Any] = {
        "amqp_url": Secret(AMQP_URL),
        "bus_prefix": prefix,
        "api_keys": tuple(Secret(key) for key in API_KEYS),
        "shared_secrets": tuple(Secret(secret) for secret in SHARED_SECRETS),
        "publish_timeout": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


class BusView:
    """A test's own connection to the broker: probe queues, reads, and clean-up by prefix."""

    def __init__(self, channel: AbstractChannel, names: BusNames) -> None:
        self.channel = channel
        self.names = names
        self._extra_queues: set[str] = set()

    async def declare(self) -> None:
        await declare_receiver_topology(self.channel, self.names)

    async def probe(self, *patterns: str) -> AbstractQueue:
        """An exclusive queue bound to `patterns` on the events exchange; gone with the test."""
        await self.declare()
        queue = await self.channel.declare_queue(
            f"{self.names.prefix}.probe.{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True
        )
        for pattern in patterns:
            await queue.bind(self.names.events, routing_key=pattern)
        return queue

    async def queue(self, name: str) -> AbstractQueue:
        """One of the receiver's own queues, declared passively."""
        return await self.channel.declare_queue(name, passive=True)

    async def get(self, queue: AbstractQueue, timeout: float = 5.0) -> AbstractIncomingMessage:
        """The next message on `queue`, acknowledged; fail if none arrives in time."""
        async with asyncio.timeout(timeout):
            while True:
                message = await queue.get(no_ack=True, fail=False)
                if message is not None:
                    return message
                await asyncio.sleep(0.02)

    async def drain(self, queue: AbstractQueue) -> list[AbstractIncomingMessage]:
        """Everything on `queue` right now."""
        messages = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            messages.append(message)
        return messages

    async def publish_event(self, name: str, **fields: Any) -> str:
        """Publish an event as the receiver would, with confirm; return its message id."""
        body = json.dumps({"EventName": name, "FrontOfficeTenantId": 6, **fields}).encode()
        receipt = Receipt(str(uuid.uuid4()), AuthMethod.API_KEY, datetime.now(UTC))
        message = event_message(self.names, parse(body), body, receipt)
        underlay = await self.channel.get_underlay_channel()
        await underlay.basic_publish(
            message.body,
            exchange=message.exchange,
            routing_key=message.routing_key,
            properties=message.properties,
            mandatory=True,
        )
        return message.message_id

    def forget_later(self, *queues: str) -> None:
        """Delete these queues with the rest at the end of the test."""
        self._extra_queues.update(queues)

    async def remove_all(self) -> None:
        registry = f"{self.names.prefix}.registry.log"  # written by every worker that starts
        for queue in (
            self.names.unrouted,
            self.names.invalid,
            registry,
            f"{self.names.prefix}.registry",  # where earlier versions kept it
            f"{self.names.prefix}.stats.log",  # every worker's reports, for the console
            *sorted(self._extra_queues),
        ):
            await self.channel.queue_delete(queue)
        for exchange in (self.names.events, self.names.unrouted):
            await self.channel.exchange_delete(exchange)


async def open_bus(
    prefix: str, url: str = AMQP_URL
) -> tuple[aio_pika.abc.AbstractConnection, BusView]:
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    return connection, BusView(channel, BusNames(prefix))


@asynccontextmanager
async def connections(count: int) -> AsyncIterator[Sequence[aio_pika.abc.AbstractConnection]]:
    """`count` connections to the test broker, as separate processes would hold them."""
    opened = [await aio_pika.connect(AMQP_URL) for _ in range(count)]
    try:
        yield opened
    finally:
        for connection in opened:
            await connection.close()


async def all_at_once(
    opened: Sequence[aio_pika.abc.AbstractConnection],
    calls: Iterable[Awaitable[Any]],
    attempt: int,
) -> None:
    """Run `calls` together: none may fail, and none of `opened` may be closed after."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert [o for o in outcomes if o is not None] == [], f"try {attempt + 1}"
    closed = [n for n, connection in enumerate(opened) if connection.is_closed]
    assert not closed, f"try {attempt + 1}: connections {closed} closed"


async def status_line(host: str, port: int, request: bytes) -> bytes:
    """Send `request` as raw bytes on a new connection; return the answer's status line."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.readline()
    finally:
        writer.close()
