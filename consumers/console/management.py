"""Queue lists from RabbitMQ's management API (the `rabbitmq_management` plugin).

AMQP can look up a queue by name but cannot list queues; the management API can.
Errors become `ManagementUnavailable` with a reason fit for a page: the address and
what went wrong, never the credentials.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

TIMEOUT = aiohttp.ClientTimeout(total=5)
PAGE = 500
_COLUMNS = "name,type,messages_ready,messages_unacknowledged,consumers"


class ManagementUnavailable(RuntimeError):
    """The management API could not be asked; the message says where and why."""


@dataclass(frozen=True, slots=True)
class QueueInfo:
    name: str
    ready: int
    unacked: int
    consumers: int


class Management:
    """Lists the queues of one vhost whose names start with a prefix."""

    def __repr__(self) -> str:
        return f"Management({self.display!r})"

    def __init__(self, url: str, vhost: str) -> None:
        parsed = URL(url)
        self._headers = (
            {"Authorization": aiohttp.encode_basic_auth(parsed.user, parsed.password or "")}
            if parsed.user
            else {}
        )
        self._base = parsed.with_user(None).with_query(None).with_fragment(None)
        self.display = str(self._base)
        self._vhost = vhost

    async def queues(self, prefix: str) -> list[QueueInfo]:
        """Every queue named `prefix.*` in the vhost; raise `ManagementUnavailable`."""
        found: list[QueueInfo] = []
        page = 1
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT, headers=self._headers) as session:
                while True:
                    body = await self._page(session, prefix, page)
                    found.extend(_info(item) for item in body.get("items", []))
                    if page >= int(body.get("page_count", 1) or 1):
                        return found
                    page += 1
        except aiohttp.ClientResponseError as exc:
            hint = " (check the user and password)" if exc.status in (401, 403) else ""
            raise ManagementUnavailable(
                f"RabbitMQ's management API at {self.display} answered {exc.status}{hint}"
            ) from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ManagementUnavailable(
                f"cannot reach RabbitMQ's management API at {self.display}"
                f" ({type(exc).__name__}); enable it with"
                " `rabbitmq-plugins enable rabbitmq_management`, or set RABBITMQ_MANAGEMENT_URL"
            ) from None

    async def _page(self, session: aiohttp.ClientSession, prefix: str, page: int) -> Any:
        path = self._base.path.rstrip("/") + f"/api/queues/{quote(self._vhost, safe='')}"
        url = self._base.with_path(path, encoded=True).with_query(
            columns=_COLUMNS,
            name=f"^{re.escape(prefix)}\\.",
            use_regex="true",
            page=str(page),
            page_size=str(PAGE),
        )
        async with session.get(url, raise_for_status=True) as response:
            return await response.json()


def _info(item: dict[str, Any]) -> QueueInfo:
    def number(key: str) -> int:
        value = item.get(key)
        return value if isinstance(value, int) else 0

    return QueueInfo(
        str(item.get("name", "")),
        number("messages_ready"),
        number("messages_unacknowledged"),
        number("consumers"),
    )
