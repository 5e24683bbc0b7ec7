"""Masking configured secrets in log events: the last line of defence, after never logging them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import orjson
import structlog

from service.shared.text import encodable, safe_text

MASK = "[redacted]"


class Masker:
    """Replaces every configured secret in text, longest first.

    A secret is looked for as written and as `repr` escapes it in a str or in bytes,
    since exceptions and other objects reach a log line through `repr`.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self.forms: tuple[str, ...] = ()
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Mask these too from now on (a token the process obtained, say)."""
        forms: set[str] = set(self.forms)
        for secret in secrets:
            if not secret:
                continue
            forms.update((secret, repr(secret)[1:-1]))
            # A secret with a lone surrogate cannot be in bytes a library logs.
            with contextlib.suppress(UnicodeEncodeError):
                forms.add(repr(secret.encode())[2:-1])
        self.forms = tuple(sorted(forms, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for form in self.forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def deep(self, value: Any) -> Any:
        """`value` with every string in it masked, dict keys and nested values included."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self.deep(key): self.deep(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.deep(item) for item in value]
        return value


class MaskFields:
    """A structlog processor masking secrets field by field, for renderers other than JSON."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._mask = Masker([*secrets, *_LEARNT])
        _ACTIVE.append(self)

    def add(self, *secrets: str) -> None:
        self._mask.add(*secrets)

    def __call__(
        self, _: Any, __: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        return {key: self._mask.deep(value) for key, value in event.items()}


class RedactingJSON:
    """Renders an event as one JSON line with no configured secret in it.

    JSON escapes a string character by character, so a secret anywhere in the event
    shows in the line as its escaped form: one search of the rendered bytes per form
    tells whether the line is clean, which it nearly always is. Only then is the event
    masked field by field and rendered again, so the line stays valid JSON.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._mask = Masker([*secrets, *_LEARNT])
        self._escaped: tuple[bytes, ...] = ()
        self.add()
        _ACTIVE.append(self)

    def add(self, *secrets: str) -> None:
        """Mask these too from now on."""
        self._mask.add(*secrets)
        found = []
        for form in self._mask.forms:
            try:
                found.append(orjson.dumps(form)[1:-1])
            except orjson.JSONEncodeError:
                continue  # a lone surrogate: orjson could not render it in a line either
        self._escaped = tuple(found)

    def _object(self, value: object) -> str:
        # Objects orjson cannot encode, dataclasses included, are logged by their repr.
        return safe_text(self._mask(repr(value)))

    def _dumps(self, event: Any) -> bytes:
        return orjson.dumps(event, default=self._object, option=orjson.OPT_PASSTHROUGH_DATACLASS)

    def __call__(self, _: Any, __: str, event: structlog.typing.EventDict) -> bytes:
        try:
            line = self._dumps(event)
        except TypeError:  # orjson's JSONEncodeError: text it cannot encode, a lone surrogate
            event = encodable(event)
            try:
                line = self._dumps(event)
            except TypeError as exc:
                # A logging call never fails its caller; this line at least says one was lost.
                return orjson.dumps(
                    {"event": "log line not rendered", "error": safe_text(str(exc))}
                )
        # A plain loop: this runs for every line, and a generator is made each time.
        for form in self._escaped:
            if form in line:
                return self._dumps(self._mask.deep(event))
        return line


_ACTIVE: list[MaskFields | RedactingJSON] = []
# Secrets learnt while running; processors made later (logging configured again) take them.
_LEARNT: set[str] = set()


def redact_also(*secrets: str) -> None:
    """Mask these in every log line from now on: secrets learnt after logging was set up."""
    _LEARNT.update(s for s in secrets if s)
    for processor in _ACTIVE:
        processor.add(*secrets)


def learnt() -> list[str]:
    """The secrets `redact_also` was given."""
    return sorted(_LEARNT)


def forget_redactors() -> None:
    """Logging is being configured anew: the old processors are no longer used."""
    _ACTIVE.clear()


def redact(text: str) -> str:
    """`text` with every secret a log line would mask replaced by `MASK`.

    For text that leaves the process another way, such as a dead letter's traceback: the
    secrets logging was configured with (`configure_logging(redact=...)`) and those
    learnt since (`redact_also`), masked exactly as in a log line.
    """
    maskers = [processor._mask for processor in _ACTIVE] or [Masker(_LEARNT)]
    for mask in maskers:
        text = mask(text)
    return text
