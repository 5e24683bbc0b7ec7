"""The JSON log renderer masks every configured secret, wherever in the line it sits."""

from __future__ import annotations

import orjson

from service.logs import _RedactingJSON

PLAIN = "plain-secret-1234"
ESCAPED = 'quote"and\\back\nslash-9876'


def render(event: dict[str, object]) -> bytes:
    return _RedactingJSON([PLAIN, ESCAPED, ""])(None, "info", event)


def test_a_secret_in_any_field_is_masked() -> None:
    line = render({"event": f"key {PLAIN} seen", "detail": {"nested": [PLAIN]}, "n": 1})
    assert PLAIN.encode() not in line
    assert orjson.loads(line) == {
        "event": "key [redacted] seen",
        "detail": {"nested": ["[redacted]"]},
        "n": 1,
    }


def test_a_secret_with_characters_json_escapes_is_masked() -> None:
    line = render({"exception": f"Traceback\n  ValueError: {ESCAPED}\n"})
    assert orjson.loads(line) == {"exception": "Traceback\n  ValueError: [redacted]\n"}


def test_a_line_without_secrets_is_plain_json() -> None:
    event = {"event": "delivery", "status": 200, "duration_ms": 1.5, "remote": "127.0.0.1"}
    assert orjson.loads(render(event)) == event


def test_objects_orjson_cannot_encode_are_rendered_by_repr() -> None:
    class Thing:
        def __repr__(self) -> str:
            return f"Thing({PLAIN})"

    assert orjson.loads(render({"thing": Thing()})) == {"thing": "Thing([redacted])"}
