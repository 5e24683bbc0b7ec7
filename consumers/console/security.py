"""Who may use the console, and what a page may do: Basic auth, CSRF tokens, strict headers.

The console is for operators only: it listens on 127.0.0.1 by default, asks every
request for HTTP Basic credentials (compared in constant time), accepts a change only
as a POST that carries the CSRF token of its page and comes from its own origin, and
tells the browser to load nothing from anywhere else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from yarl import URL

log = structlog.get_logger("consumers.console")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: with it Chromium sends `Origin: null` on the console's own forms.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
REALM = 'Basic realm="relay console", charset="UTF-8"'


class Guard:
    """Checks credentials and CSRF tokens for one console process."""

    def __init__(self, user: str, password: str) -> None:
        self._user = user.encode()
        self._password = password.encode()
        # New at every start: a token from an earlier run of the console is no good.
        self._key = secrets.token_bytes(32)

    def __repr__(self) -> str:
        return "Guard(user=..., password='**********')"

    def token(self) -> str:
        """The CSRF token every form of this process carries."""
        return hmac.new(self._key, b"csrf:" + self._user, hashlib.sha256).hexdigest()

    def authenticated(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, _, password = decoded.partition(b":")
        # Both compared, whatever the first gives: the time says nothing of which failed.
        user_ok = hmac.compare_digest(user, self._user)
        password_ok = hmac.compare_digest(password, self._password)
        return user_ok and password_ok

    def csrf_ok(self, request: web.Request, sent: object) -> bool:
        """The form's token is this process's, and the request comes from the console's origin."""
        origin = request.headers.get("Origin")
        if origin is not None and (origin == "null" or URL(origin).authority != request.host):
            return False
        return isinstance(sent, str) and hmac.compare_digest(sent, self.token())

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        sent = request.headers.get("Authorization")
        if not self.authenticated(sent):
            # A browser always asks first without credentials: routine. Wrong ones are not.
            say = log.info if sent is None else log.warning
            what = "asked for credentials" if sent is None else "authentication failed"
            say(f"console {what}", remote=request.remote, path=request.path)
            response: web.StreamResponse = web.Response(
                status=401,
                text="authentication required\n",
                headers={"WWW-Authenticate": REALM},
            )
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                response = exc
        response.headers.update(HEADERS)
        return response
