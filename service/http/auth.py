"""Authentication of a delivery: pure code on the raw bytes, with no I/O and no framework types.

A delivery carries either an API key in `X-api-key`, or in `X-Payload-Signature` a
shared secret or the HMAC-SHA256 of the raw body under a shared secret (hex or
base64, with an optional `sha256=` prefix). Every comparison runs in constant time
and visits every configured value, so timing tells nothing about which part failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

from service.shared.bus import AuthMethod
from service.shared.errors import Unauthorized


def _encode(value: str) -> bytes:
    # surrogateescape round-trips bytes that are not UTF-8, in headers and in the environment;
    # any other lone surrogate still encodes, and so can only fail to match.
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def _digest(value: str) -> bytes:
    # Comparing fixed-length digests keeps the time independent of the value's length.
    return hashlib.sha256(_encode(value)).digest()


def _matches_any(candidate: bytes, expected: Iterable[bytes]) -> bool:
    found = False
    for value in expected:
        found |= hmac.compare_digest(candidate, value)
    return found


def _decode_signature(signature: str) -> bytes | None:
    """The raw bytes of a hex or base64 SHA-256 signature, or None if it is neither."""
    text = signature.strip()
    if text[:7].lower() == "sha256=":
        text = text[7:]
    try:
        if len(text) == 64:
            return bytes.fromhex(text)
        if len(text) in (43, 44):
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
            return raw if len(raw) == 32 else None
    except (ValueError, binascii.Error):
        return None
    return None


class Authenticator:
    """Checks deliveries against the configured API keys and shared secrets."""

    def __init__(self, *, api_keys: Iterable[str], shared_secrets: Iterable[str]) -> None:
        self._api_keys = tuple(_digest(key) for key in api_keys)
        secrets = tuple(shared_secrets)
        self._secrets = tuple(_digest(secret) for secret in secrets)
        self._hmacs = tuple(
            hmac.new(_encode(secret), digestmod=hashlib.sha256) for secret in secrets
        )
        if not self._api_keys and not self._secrets:
            raise ValueError("at least one API key or shared secret is required")

    def __repr__(self) -> str:
        return f"Authenticator(api_keys={len(self._api_keys)}, shared_secrets={len(self._secrets)})"

    def authenticate(
        self, body: bytes, *, api_key: str | None, signature: str | None
    ) -> AuthMethod:
        """Return how the delivery authenticated, or raise `Unauthorized`."""
        if api_key and self._api_keys and _matches_any(_digest(api_key), self._api_keys):
            return AuthMethod.API_KEY
        if signature and self._secrets:
            if _matches_any(_digest(signature), self._secrets):
                return AuthMethod.SHARED_SECRET
            raw = _decode_signature(signature)
            if raw is not None:
                macs = []
                for base in self._hmacs:
                    mac = base.copy()
                    mac.update(body)
                    macs.append(mac.digest())
                if _matches_any(raw, macs):
                    return AuthMethod.HMAC
        raise Unauthorized
