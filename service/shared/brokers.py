"""Several broker URLs, the nodes of one RabbitMQ cluster, tried one after another.

`AMQP_URL` may list nodes separated by commas (a comma inside a password is written
`%2C`). Every process connects to one node and, when that fails or is lost, moves on
to the next; a whole round of failures is followed by a pause that grows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import aio_pika
from aio_pika.abc import AbstractConnection
from yarl import URL

from service.shared.errors import SettingsError

T = TypeVar("T")


def split(raw: str) -> tuple[str, ...]:
    """The URLs in a comma-separated list, blanks dropped."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def validate(name: str, raw: str) -> tuple[str, ...]:
    """Check every URL in `raw`; raise `SettingsError` naming the entry, never its value."""
    urls = split(raw)
    if not urls:
        raise SettingsError(name, "holds no URL")
    vhosts = set()
    for number, each in enumerate(urls, 1):
        where = f"entry {number} " if len(urls) > 1 else ""
        try:
            url = URL(each)
        except (TypeError, ValueError):
            raise SettingsError(name, f"{where}is not a valid URL") from None
        if url.scheme not in ("amqp", "amqps") or not url.host:
            raise SettingsError(name, f"{where}must be an amqp:// or amqps:// URL with a host")
        vhosts.add(url.path.removeprefix("/") or "/")
    if len(vhosts) > 1:
        raise SettingsError(name, "lists nodes of one cluster: every URL must name the same vhost")
    return urls


def display_url(url: URL) -> str:
    """`url` fit for logs: its password masked, its query (options) left out."""
    url = url.with_query(None)
    return str(url.with_password("***")) if url.password else str(url)


def display(raw: str) -> str:
    """Every URL of a list, each as `display_url` shows it."""
    return ",".join(display_url(URL(each)) for each in split(raw))


class Nodes:
    """The nodes in turn: `current` is the one to try, `advance` moves to the next."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("no broker URL")
        self.urls = tuple(urls)
        self._index = 0

    @property
    def current(self) -> str:
        return self.urls[self._index]

    @property
    def shown(self) -> str:
        """The current node for a log line, without credentials."""
        return display_url(URL(self.current))

    @property
    def listed(self) -> str:
        """Every node, for a log line, without credentials."""
        return ",".join(display_url(URL(u)) for u in self.urls)

    def advance(self) -> bool:
        """Move to the next node; True when that starts a new round."""
        self._index = (self._index + 1) % len(self.urls)
        return self._index == 0

    def __repr__(self) -> str:
        return f"Nodes({self.listed})"


async def first_answer(nodes: Nodes, attempt: Callable[[str], Awaitable[T]]) -> T:
    """`attempt` on each node once, from the current one; the first result wins.

    Raises the last node's error when none answers. `nodes` stays at the node that
    answered, or moves one on from the last that failed.
    """
    error: BaseException | None = None
    for _ in nodes.urls:
        try:
            return await attempt(nodes.current)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            error = exc
            nodes.advance()
    assert error is not None
    raise error


async def connect(raw: str, *, within: float = 10.0) -> AbstractConnection:
    """A connection to the first node of `raw` (a list) that answers; `within` s for each."""

    async def one(url: str) -> AbstractConnection:
        async with asyncio.timeout(within):
            return await aio_pika.connect(url, timeout=within)

    return await first_answer(Nodes(split(raw)), one)
