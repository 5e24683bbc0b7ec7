"""`avionte_api`: Avionté's REST API on loopback, enforcing what its documentation asks.

- `POST /authorize/token` needs `X-api-key` and the form fields `grant_type`
  (`client_credentials`), `client_id`, `client_secret` and `scope`; it issues tokens
  that expire after `token_seconds`.
- `GET /front-office/v1/{kind}/{id}` needs a current `Authorization: Bearer` token
  (else 401), `X-api-key`, `FrontOfficeTenantId`, a fresh uuid `RequestId` and
  `Accept: application/json` (else 400, and the reason is kept in `problems`). It
  answers the entity given for that kind and id, else 404.

Trouble comes on request: `fail` (or `script`) answers statuses for a path before the
real answer; `slow` delays a path; `revoke_all` makes every token stale. Every entity
call is kept in `calls`, with its arrival time.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from consumers.avionte.entities import KINDS
from consumers.avionte.settings import DEFAULT_SCOPE
from consumers.runtime import resources

CLIENT_ID = "relay-test-client"
CLIENT_SECRET = "client-secret-31337"  # noqa: S105 - the stand-in's own, public
API_KEY = "avionte-key-31337"
# An answer to script: a status, or a status with headers (`Retry-After`).
Answer = int | tuple[int, Mapping[str, str]]
# Kind -> id -> the entity; ids as numbers or as they appear in the path.
Entities = Mapping[str, Mapping[int, Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class Call:
    """One entity request as it arrived."""

    at: float  # time.monotonic()
    path: str  # "placement/13"
    tenant: str
    request_id: str
    token: str


class AvionteAPI:
    """The stand-in's state: what it answers, what it issued, and what it was asked."""

    def __init__(
        self,
        entities: Entities,
        fail: Mapping[str, Answer | Sequence[Answer]] | None = None,
        *,
        token_seconds: int = 3600,
    ) -> None:
        self.entities: dict[str, dict[str, Mapping[str, Any]]] = {
            kind: {str(entity_id): entity for entity_id, entity in by_id.items()}
            for kind, by_id in entities.items()
        }
        self.token_seconds = token_seconds
        self.url = ""
        self.calls: list[Call] = []
        self.token_requests = 0
        self.issued: list[str] = []
        self.problems: list[str] = []
        self.slow: dict[str, float] = {}
        self._scripts: defaultdict[str, list[tuple[int, Mapping[str, str]]]] = defaultdict(list)
        self._tokens: dict[str, float] = {}
        self._request_ids: set[str] = set()
        for path, answers in (fail or {}).items():
            self.script(path, *_answers(answers))

    def __repr__(self) -> str:
        return f"AvionteAPI({self.url!r}, calls={len(self.calls)})"

    def script(self, path: str, *answers: Answer) -> None:
        """Answer these statuses for `path` (`placement/7`), in turn, before the real answer."""
        for answer in answers:
            self._scripts[path].append(answer if isinstance(answer, tuple) else (answer, {}))

    def revoke_all(self) -> None:
        """Every token issued so far stops working: the next call gets 401."""
        self._tokens.clear()

    def env(self) -> dict[str, str]:
        """The AVIONTE_* settings of a client that talks to this API."""
        return {
            "AVIONTE_API_URL": self.url,
            "AVIONTE_CLIENT_ID": CLIENT_ID,
            "AVIONTE_CLIENT_SECRET": CLIENT_SECRET,
            "AVIONTE_API_KEY": API_KEY,
        }

    def for_path(self, path: str) -> list[Call]:
        return [call for call in self.calls if call.path == path]

    def busiest_second(self) -> int:
        """The most calls that arrived within any one second."""
        times = sorted(call.at for call in self.calls)
        return max(
            (sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times)),
            default=0,
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/authorize/token", self._token)
        app.router.add_get("/front-office/v1/{kind}/{id}", self._entity)
        return app

    def _refuse(self, reason: str) -> web.Response:
        self.problems.append(reason)
        return web.json_response({"error": reason}, status=400)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.token_requests += 1
        if request.headers.get("X-api-key") != API_KEY:
            return self._refuse("token: X-api-key")
        expected = {
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scope": DEFAULT_SCOPE,
        }
        for name, value in expected.items():
            if form.get(name) != value:
                return self._refuse(f"token: form field {name}")
        token = f"tok-{uuid.uuid4().hex}"
        self.issued.append(token)
        self._tokens[token] = time.monotonic() + self.token_seconds
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.token_seconds}
        )

    async def _entity(self, request: web.Request) -> web.Response:
        kind, entity_id = request.match_info["kind"], request.match_info["id"]
        path = f"{kind}/{entity_id}"
        headers = request.headers
        bearer = headers.get("Authorization", "")
        token = bearer.removeprefix("Bearer ")
        request_id = headers.get("RequestId", "")
        tenant = headers.get("FrontOfficeTenantId", "")
        self.calls.append(Call(time.monotonic(), path, tenant, request_id, token))
        if not bearer.startswith("Bearer ") or self._tokens.get(token, 0) < time.monotonic():
            return web.json_response({"error": "token"}, status=401)
        if headers.get("X-api-key") != API_KEY:
            return self._refuse("call: X-api-key")
        if not tenant.isdigit():
            return self._refuse("call: FrontOfficeTenantId")
        try:
            uuid.UUID(request_id)
        except ValueError:
            return self._refuse("call: RequestId")
        if request_id in self._request_ids:
            return self._refuse("call: RequestId reused")
        self._request_ids.add(request_id)
        if headers.get("Accept") != "application/json":
            return self._refuse("call: Accept")
        if path in self.slow:
            await asyncio.sleep(self.slow[path])
        if self._scripts[path]:
            status, extra = self._scripts[path].pop(0)
            return web.json_response({"error": "scripted"}, status=status, headers=extra)
        entity = self.entities.get(kind, {}).get(entity_id) if kind in KINDS else None
        if entity is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(dict(entity))


def _answers(value: Answer | Sequence[Answer]) -> Sequence[Answer]:
    """`fail`'s value as a list: one status, one (status, headers), or a list of them."""
    if isinstance(value, int):
        return [value]
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], Mapping):
        return [value]
    return list(value)


@asynccontextmanager
async def avionte_api(
    entities: Entities,
    *,
    fail: Mapping[str, Answer | Sequence[Answer]] | None = None,
) -> AsyncIterator[AvionteAPI]:
    """Serve Avionté's API on loopback, and point the client (`consumers.avionte`) at it.

    `entities` maps a kind as in the path (`"placement"`, `"talent"`, ...) to a mapping
    of id to the entity's dict; an id not there is a 404. `fail` maps a path such as
    `"placement/13"` to a status (or a list, answered in turn) given before the entity:
    a 429 or 5xx is a retry, a 404 `EntityGone`. For the block, the AVIONTE_* variables
    name this API and its credentials, and `avionte()` is a new client that uses them;
    both are as they were after it.
    """
    api = AvionteAPI(entities, fail)
    runner = web.AppRunner(api.app(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        api.url = f"http://{host}:{port}"
        before = {name: os.environ.get(name) for name in api.env()}
        os.environ.update(api.env())
        try:
            # The process's client was made for other settings, or in another test's loop.
            await resources.close("avionte")
            yield api
        finally:
            await resources.close("avionte")
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    finally:
        await runner.cleanup()
