"""The Avionté API client: the documented headers, one token, a shared rate limit, clear errors.

Every call sends `Authorization: Bearer <token>`, `X-api-key`, `FrontOfficeTenantId`
(the event's tenant), a fresh `RequestId` and `Accept: application/json`, and waits for
the rate limiter first. One client (one connection pool, one token, one limiter) serves
every handler of a process: `consumers.avionte.avionte()`.
"""

from __future__ import annotations

import email.utils
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp

from consumers.avionte.entities import KINDS, entity_of
from consumers.avionte.errors import (
    FIRST_BACKOFF,
    AvionteRejected,
    AvionteUnavailable,
    EntityGone,
    UnmappedEvent,
)
from consumers.avionte.limiter import RateLimiter
from consumers.avionte.settings import AvionteSettings
from consumers.avionte.token import TokenSource
from consumers.event import Event
from service.observability.redaction import redact_also

# A Retry-After beyond this is taken as this: the message waits in a retry queue anyway.
MAX_RETRY_AFTER = 3600.0
FRONT_OFFICE = "/front-office/v1"


class AvionteClient:
    """Fetches entities from Avionté's front-office API for events' tenants."""

    def __init__(self, settings: AvionteSettings) -> None:
        self.settings = settings
        self._limiter = RateLimiter(settings.rate_limit)
        self._session: aiohttp.ClientSession | None = None
        self._tokens: TokenSource | None = None
        self.calls = 0

    def __repr__(self) -> str:
        return f"AvionteClient({self.settings.url!r}, calls={self.calls})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AvionteClient:
        """A client configured by AVIONTE_*; its secrets are masked in every log line."""
        settings = AvionteSettings.from_env(os.environ if environ is None else environ)
        redact_also(*settings.secret_values())
        return cls(settings)

    def _open(self) -> tuple[aiohttp.ClientSession, TokenSource]:
        if self._session is None or self._tokens is None:
            self._session = aiohttp.ClientSession(
                # Longest a call may take, connecting and reading included.
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                connector=aiohttp.TCPConnector(limit=32),
            )
            self._tokens = TokenSource(self.settings, self._session)
        return self._session, self._tokens

    @property
    def tokens_fetched(self) -> int:
        return self._tokens.fetched if self._tokens else 0

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, event: Event) -> dict[str, Any]:
        """The current state of the entity `event` names (see `entities.EVENTS`)."""
        ref = entity_of(event)
        return await self.entity(ref.kind, ref.id, event.tenant_id)

    async def entity(self, kind: str, entity_id: int, tenant_id: int | None) -> dict[str, Any]:
        """`GET /front-office/v1/{kind}/{id}` for `tenant_id`, as a dict."""
        if kind not in KINDS:
            raise UnmappedEvent(f"{kind!r} is not one of {', '.join(KINDS)}")
        if tenant_id is None:
            raise AvionteRejected("the event carries no tenant for FrontOfficeTenantId")
        session, tokens = self._open()
        path = f"{self.settings.url}{FRONT_OFFICE}/{kind}/{entity_id}"
        token = await tokens.token()
        status, headers, body = await self._get(session, path, tenant_id, token)
        if status == 401:
            token = await tokens.renew(token)
            status, headers, body = await self._get(session, path, tenant_id, token)
            if status == 401:
                raise AvionteUnavailable(f"{kind} {entity_id}: 401 with a renewed token")
        where = f"{kind} {entity_id} (tenant {tenant_id})"
        if status == 200:
            if not isinstance(body, dict):
                raise AvionteUnavailable(f"{where}: the answer is not a JSON object")
            return body
        if status == 404:
            raise EntityGone(f"{where} is gone (404)")
        if status == 429 or status >= 500:
            raise AvionteUnavailable(f"{where}: {status}", after=_retry_after(headers))
        raise AvionteRejected(f"{where}: {status}")

    async def _get(
        self, session: aiohttp.ClientSession, url: str, tenant_id: int, token: str
    ) -> tuple[int, Mapping[str, str], object]:
        headers = {
            "Authorization": f"Bearer {token}",
            "X-api-key": self.settings.api_key.value,
            "FrontOfficeTenantId": str(tenant_id),
            "RequestId": str(uuid.uuid4()),
            "Accept": "application/json",
        }
        async with self._limiter.slot():
            self.calls += 1
            try:
                async with session.get(url, headers=headers) as response:
                    body = (
                        await response.json(content_type=None) if response.status == 200 else None
                    )
                    return response.status, response.headers, body
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                where = url.rsplit("/", 2)[-2]
                raise AvionteUnavailable(f"{where}: {type(exc).__name__}") from None


def _retry_after(headers: Mapping[str, str]) -> float:
    """Seconds the answer asks to wait (a number or an HTTP date), else Avionté's 5 s."""
    value = headers.get("Retry-After", "").strip()
    if not value:
        return FIRST_BACKOFF
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return FIRST_BACKOFF
    return min(max(0.0, moment.timestamp() - time.time()), MAX_RETRY_AFTER)
