"""Text made safe to encode: what reaches a log line or an AMQP header must be valid UTF-8.

Python strings can hold lone surrogates (`os.fsdecode(b"\\xe9")` gives one), which no
UTF-8 encoder takes. They are shown as backslash escapes instead.
"""

from __future__ import annotations

from typing import Any


def safe_text(text: str) -> str:
    """`text`, with anything UTF-8 cannot encode written as a backslash escape."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def encodable(value: Any) -> Any:
    """`value` with every string in it (dict keys and nested values too) made safe."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {encodable(str(key)): encodable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [encodable(item) for item in value]
    return value
