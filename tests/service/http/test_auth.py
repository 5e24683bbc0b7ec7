"""Authentication on raw bytes: every method, rotation, and every refusal."""

from __future__ import annotations

import pytest

from service.http.auth import Authenticator
from service.shared.bus import AuthMethod
from service.shared.errors import Unauthorized
from tests.support import API_KEYS, SHARED_SECRETS, sign_base64, sign_hex

BODY = b'{"EventName":"talent_created","FrontOfficeTenantId":6}'


@pytest.fixture
def authenticator() -> Authenticator:
    return Authenticator(api_keys=API_KEYS, shared_secrets=SHARED_SECRETS)


@pytest.mark.parametrize("index", [0, 1])
def test_every_method_with_every_rotated_value(authenticator: Authenticator, index: int) -> None:
    secret = SHARED_SECRETS[index]
    cases = [
        ({"api_key": API_KEYS[index], "signature": None}, AuthMethod.API_KEY),
        ({"api_key": None, "signature": secret}, AuthMethod.SHARED_SECRET),
        ({"api_key": None, "signature": sign_hex(BODY, secret)}, AuthMethod.HMAC),
        ({"api_key": None, "signature": sign_hex(BODY, secret).upper()}, AuthMethod.HMAC),
        ({"api_key": None, "signature": "sha256=" + sign_hex(BODY, secret)}, AuthMethod.HMAC),
        ({"api_key": None, "signature": sign_base64(BODY, secret)}, AuthMethod.HMAC),
        ({"api_key": None, "signature": "sha256=" + sign_base64(BODY, secret)}, AuthMethod.HMAC),
        ({"api_key": None, "signature": sign_base64(BODY, secret).rstrip("=")}, AuthMethod.HMAC),
    ]
    for headers, method in cases:
        assert authenticator.authenticate(BODY, **headers) is method


@pytest.mark.parametrize(
    ("api_key", "signature"),
    [
        (None, None),
        ("", None),
        (None, ""),
        ("", ""),
        ("wrong-key", None),
        (API_KEYS[0].upper(), None),
        (API_KEYS[0].lower(), None),
        (API_KEYS[0] + " ", None),
        (API_KEYS[0][:-1], None),
        (None, SHARED_SECRETS[0].swapcase()),
        (None, API_KEYS[0]),
        (SHARED_SECRETS[0], None),
        (None, sign_hex(BODY + b" ", SHARED_SECRETS[0])),
        (None, sign_base64(b"{}", SHARED_SECRETS[0])),
        (None, sign_hex(BODY, "another-secret")),
        (None, "sha256=" + "0" * 64),
        (None, "sha256="),
        (None, "z" * 64),
        (None, "é" * 44),
    ],
)
def test_refusals(authenticator: Authenticator, api_key: str | None, signature: str | None) -> None:
    with pytest.raises(Unauthorized) as caught:
        authenticator.authenticate(BODY, api_key=api_key, signature=signature)
    assert str(caught.value) == ""


def test_a_wrong_key_does_not_hide_a_valid_signature(authenticator: Authenticator) -> None:
    method = authenticator.authenticate(BODY, api_key="stale", signature=SHARED_SECRETS[1])
    assert method is AuthMethod.SHARED_SECRET


def test_api_keys_only_refuse_signatures() -> None:
    keys_only = Authenticator(api_keys=["k-1"], shared_secrets=[])
    with pytest.raises(Unauthorized):
        keys_only.authenticate(BODY, api_key=None, signature="k-1")


def test_needs_a_credential() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Authenticator(api_keys=[], shared_secrets=[])


def test_repr_counts_but_never_shows(authenticator: Authenticator) -> None:
    text = repr(authenticator)
    assert text == "Authenticator(api_keys=2, shared_secrets=2)"
