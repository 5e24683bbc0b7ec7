"""No configured secret reaches a log line, and masking never breaks the line's JSON."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog

from service.observability import redaction
from service.observability.logs import configure_logging
from service.observability.redaction import MaskFields, RedactingJSON
from service.shared.environment import Secret

PLAIN = "plain-secret-1234"
ESCAPED = 'quote"and\\back\nslash-9876'
SECRETS = [PLAIN, ESCAPED, ""]


@pytest.fixture(autouse=True)
def own_redactors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processors made here register as active; later tests must not mask their secrets."""
    monkeypatch.setattr(redaction, "_ACTIVE", list(redaction._ACTIVE))


def strings(value: Any) -> Iterator[str]:
    """Every string in a parsed line, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def render(event: dict[str, Any], secrets: list[str] = SECRETS) -> dict[str, Any]:
    """The line for `event`, parsed, after checking no string in it holds a secret."""
    parsed: dict[str, Any] = orjson.loads(RedactingJSON(secrets)(None, "info", event))
    leaks = [text for text in strings(parsed) for secret in secrets if secret and secret in text]
    assert not leaks, leaks
    return parsed


def test_a_line_without_secrets_is_plain_json() -> None:
    event = {"event": "delivery", "status": 200, "duration_ms": 1.5, "remote": "127.0.0.1"}
    assert render(event) == event


def test_a_secret_in_any_string_is_masked_keys_and_nested_values_included() -> None:
    event = {"event": f"key {PLAIN} seen", "detail": {"nested": [PLAIN], PLAIN: 1}, "n": 1}
    assert render(event) == {
        "event": "key [redacted] seen",
        "detail": {"nested": ["[redacted]"], "[redacted]": 1},
        "n": 1,
    }


def test_a_secret_with_characters_json_escapes_is_masked() -> None:
    event = {"exception": f"Traceback\n  ValueError: {ESCAPED}\n"}
    assert render(event) == {"exception": "Traceback\n  ValueError: [redacted]\n"}


def test_a_short_secret_cannot_break_the_line() -> None:
    assert render({"attempt": 1, "duration_ms": 1.25, "note": "a1b"}, ["1"]) == {
        "attempt": 1,
        "duration_ms": 1.25,
        "note": "a[redacted]b",
    }


@pytest.mark.parametrize("secret", [PLAIN, ESCAPED, "naïve\\secret"])
def test_objects_logged_by_repr_are_masked(secret: str) -> None:
    event = {"error": ValueError(secret), "raw": secret.encode(), "both": {secret}}
    line = render(event, [secret])
    assert all("[redacted]" in value for value in line.values()), line


def test_a_secret_holder_is_logged_by_its_masked_repr() -> None:
    assert render({"key": Secret(PLAIN)}) == {"key": "Secret('**********')"}


def test_a_secret_orjson_cannot_encode_does_not_stop_logging() -> None:
    assert render({"event": "started"}, ["bad\udcffsecret"]) == {"event": "started"}


def test_console_lines_are_masked_field_by_field() -> None:
    masked = MaskFields(SECRETS)(None, "info", {"event": PLAIN, "extra": [{"k": ESCAPED}]})
    assert masked == {"event": "[redacted]", "extra": [{"k": "[redacted]"}]}


@pytest.fixture
def own_logging(restored_logging: None) -> io.BytesIO:
    """Logging configured to a buffer with SECRETS to mask; the suite's setup restored after."""
    stream = io.BytesIO()
    configure_logging("info", "json", redact=SECRETS, stream=stream)
    return stream


def test_relay_and_library_lines_are_masked(own_logging: io.BytesIO) -> None:
    structlog.get_logger("relay.test").info("connecting", url=f"amqp://u:{PLAIN}@h/")
    logging.getLogger("library.test").warning("failed with %s", ESCAPED)
    lines = [orjson.loads(line) for line in own_logging.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["connecting", "failed with [redacted]"]
    assert lines[0]["url"] == "amqp://u:[redacted]@h/"
