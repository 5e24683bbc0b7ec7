"""A stand-in for Avionté's REST API that enforces what its documentation asks of a client.

- `POST /authorize/token` needs `X-api-key` and the form fields `grant_type`
  (`client_credentials`), `client_id`, `client_secret` and `scope`; it issues tokens
  that expire after `token_seconds`.
- `GET /front-office/v1/{kind}/{id}` needs a current `Authorization: Bearer` token
  (else 401), `X-api-key`, `FrontOfficeTenantId`, a fresh uuid `RequestId` and
  `Accept: application/json` (else 400).

A test scripts trouble per entity (`script`: statuses to answer before the real one,
with headers), makes entities gone (404), slow, or revokes tokens; the server records
every call with its arrival time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from tests.receivers import free_port

CLIENT_ID = "relay-test-client"
CLIENT_SECRET = "client-secret-31337"
API_KEY = "avionte-key-31337"
SCOPE = "avionte.aero.compasintegrationservice"
KINDS = {"placement", "talent", "company", "contact", "job", "department"}


@dataclass
class Call:
    """One entity request as it arrived."""

    at: float
    path: str
    tenant: str
    request_id: str
    token: str


@dataclass
class FakeAvionte:
    token_seconds: int = 3600
    calls: list[Call] = field(default_factory=list)
    token_requests: int = 0
    issued: list[str] = field(default_factory=list)
    gone: set[str] = field(default_factory=set)
    slow: dict[str, float] = field(default_factory=dict)
    scripts: dict[str, list[tuple[int, dict[str, str]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    problems: list[str] = field(default_factory=list)
    _tokens: dict[str, float] = field(default_factory=dict)
    _request_ids: set[str] = field(default_factory=set)
    url: str = ""

    def script(self, path: str, *answers: int | tuple[int, dict[str, str]]) -> None:
        """Answer these statuses for `path` (e.g. `placement/7`) before the real answer."""
        for answer in answers:
            self.scripts[path].append(answer if isinstance(answer, tuple) else (answer, {}))

    def revoke_all(self) -> None:
        self._tokens.clear()

    def refuse(self, reason: str) -> web.Response:
        self.problems.append(reason)
        return web.json_response({"error": reason}, status=400)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.token_requests += 1
        if request.headers.get("X-api-key") != API_KEY:
            return self.refuse("token: X-api-key")
        expected = {
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scope": SCOPE,
        }
        for name, value in expected.items():
            if form.get(name) != value:
                return self.refuse(f"token: form field {name}")
        token = f"tok-{uuid.uuid4().hex}"
        self.issued.append(token)
        self._tokens[token] = time.monotonic() + self.token_seconds
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.token_seconds}
        )

    async def entity(self, request: web.Request) -> web.Response:
        kind, entity_id = request.match_info["kind"], request.match_info["id"]
        path = f"{kind}/{entity_id}"
        bearer = request.headers.get("Authorization", "")
        token = bearer.removeprefix("Bearer ")
        self.calls.append(
            Call(
                time.monotonic(),
                path,
                request.headers.get("FrontOfficeTenantId", ""),
                request.headers.get("RequestId", ""),
                token,
            )
        )
        if not bearer.startswith("Bearer ") or self._tokens.get(token, 0) < time.monotonic():
            return web.json_response({"error": "token"}, status=401)
        if request.headers.get("X-api-key") != API_KEY:
            return self.refuse("call: X-api-key")
        if not request.headers.get("FrontOfficeTenantId", "").isdigit():
            return self.refuse("call: FrontOfficeTenantId")
        request_id = request.headers.get("RequestId", "")
        try:
            uuid.UUID(request_id)
        except ValueError:
            return self.refuse("call: RequestId")
        if request_id in self._request_ids:
            return self.refuse("call: RequestId reused")
        self._request_ids.add(request_id)
        if request.headers.get("Accept") != "application/json":
            return self.refuse("call: Accept")
        if kind not in KINDS or not entity_id.isdigit():
            return web.json_response({"error": "no such path"}, status=404)
        if path in self.slow:
            await asyncio.sleep(self.slow[path])
        if self.scripts[path]:
            status, headers = self.scripts[path].pop(0)
            return web.json_response({"error": "scripted"}, status=status, headers=headers)
        if path in self.gone:
            return web.json_response({"error": "not found"}, status=404)
        key = f"{kind[0].upper()}{kind[1:]}Id"
        return web.json_response({key: int(entity_id), "Tenant": int(call_tenant(request))})

    def for_path(self, path: str) -> list[Call]:
        return [call for call in self.calls if call.path == path]

    def busiest_second(self) -> int:
        """The most calls that arrived within any one second."""
        times = sorted(call.at for call in self.calls)
        return max(
            (sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times)),
            default=0,
        )


def call_tenant(request: web.Request) -> str:
    return request.headers.get("FrontOfficeTenantId", "0")


@asynccontextmanager
async def running_fake(token_seconds: int = 3600) -> AsyncIterator[FakeAvionte]:
    """Serve a fake Avionté API on a free loopback port for the duration of the block."""
    fake = FakeAvionte(token_seconds=token_seconds)
    app = web.Application()
    app.router.add_post("/authorize/token", fake.token)
    app.router.add_get("/front-office/v1/{kind}/{id}", fake.entity)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


def client_env(fake: FakeAvionte) -> dict[str, str]:
    """The AVIONTE_* settings of a client that talks to `fake`."""
    return {
        "AVIONTE_API_URL": fake.url,
        "AVIONTE_CLIENT_ID": CLIENT_ID,
        "AVIONTE_CLIENT_SECRET": CLIENT_SECRET,
        "AVIONTE_API_KEY": API_KEY,
    }
