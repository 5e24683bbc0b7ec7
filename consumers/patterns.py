"""Binding patterns: Avionté event names or topic patterns, normalized and matched like RabbitMQ."""

from __future__ import annotations

from functools import lru_cache

from consumers.errors import RegistrationError
from service.shared.envelope import MAX_SHORT_STRING, routing_key

WILDCARDS = ("*", "#")


def normalize_pattern(pattern: str) -> str:
    """Normalize each dot-separated word like a routing key; keep `*` and `#` as they are.

    `placement_updated` becomes `placement.updated`; `Placement.#` becomes `placement.#`.
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise RegistrationError(f"a binding pattern must be a non-empty string, got {pattern!r}")
    words = []
    for segment in pattern.strip().split("."):
        if segment in WILDCARDS:
            words.append(segment)
        elif "*" in segment or "#" in segment:
            raise RegistrationError(f"pattern {pattern!r}: a wildcard must be a whole word")
        elif not (word := routing_key(segment)):
            raise RegistrationError(f"pattern {pattern!r}: {segment!r} holds no letter or digit")
        else:
            words.append(word)
    normalized = ".".join(words)
    if len(normalized) > MAX_SHORT_STRING:
        raise RegistrationError(f"pattern {pattern!r} is longer than {MAX_SHORT_STRING} bytes")
    return normalized


@lru_cache(maxsize=4096)
def matches(pattern: str, key: str) -> bool:
    """Whether a topic `pattern` matches a routing `key`: `*` is one word, `#` zero or more."""
    return _match(tuple(pattern.split(".")), tuple(key.split(".")))


def _match(pattern: tuple[str, ...], key: tuple[str, ...]) -> bool:
    if not pattern:
        return not key
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, key[i:]) for i in range(len(key) + 1))
    return bool(key) and head in ("*", key[0]) and _match(rest, key[1:])
