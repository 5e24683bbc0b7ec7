"""The OAuth token: client credentials, one request however many handlers need it at once.

`POST {AVIONTE_API_URL}/authorize/token`, form-encoded, with `X-api-key`. The answer's
`access_token` is reused until shortly before its `expires_in` runs out; a call that
gets 401 renews it once (`renew`), and only the first of several such calls fetches.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from consumers.avionte.errors import AvionteRejected, AvionteUnavailable
from consumers.avionte.settings import AvionteSettings
from service.observability.redaction import redact_also

# Renew this long before the token runs out, or a tenth of its life if that is shorter.
EARLY_SECONDS = 60.0


class TokenSource:
    """Hands out the current access token, fetching it when there is none or it ran out."""

    def __init__(self, settings: AvionteSettings, session: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._session = session
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        self.fetched = 0

    def __repr__(self) -> str:
        return f"TokenSource(fetched={self.fetched})"

    async def token(self) -> str:
        """A token that is good now."""
        token = self._token
        if token is not None and time.monotonic() < self._renew_at:
            return token
        async with self._lock:
            # Another caller may have fetched it while this one waited.
            if self._token is not None and time.monotonic() < self._renew_at:
                return self._token
            return await self._fetch()

    async def renew(self, rejected: str) -> str:
        """A fresh token after a call with `rejected` got 401; fetched once for all callers."""
        async with self._lock:
            if self._token is not None and self._token != rejected:
                return self._token  # someone else renewed it already
            return await self._fetch()

    async def _fetch(self) -> str:
        settings = self._settings
        form = {
            "grant_type": "client_credentials",
            "client_id": settings.client_id,
            "client_secret": settings.client_secret.value,
            "scope": settings.scope,
        }
        try:
            async with self._session.post(
                f"{settings.url}/authorize/token",
                data=form,
                headers={"X-api-key": settings.api_key.value, "Accept": "application/json"},
            ) as response:
                if response.status == 429 or response.status >= 500:
                    raise AvionteUnavailable(f"the token request got {response.status}")
                if response.status != 200:
                    raise AvionteRejected(f"the token request got {response.status}")
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AvionteUnavailable(f"the token request failed: {type(exc).__name__}") from None
        token = answer.get("access_token") if isinstance(answer, dict) else None
        lifetime = answer.get("expires_in") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token or not isinstance(lifetime, int | float):
            raise AvionteUnavailable("the token answer has no access_token and expires_in")
        redact_also(token)
        self.fetched += 1
        self._token = token
        self._renew_at = time.monotonic() + max(0.0, lifetime - min(EARLY_SECONDS, lifetime / 10))
        return token
