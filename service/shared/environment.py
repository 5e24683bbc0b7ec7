"""Settings readers both sides use: typed reads of the environment, and secrets that never show.

Every error names the variable, never a secret's value. A secret may also come from a
file named by `NAME_FILE` (Kubernetes secrets).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL

from service.shared import brokers
from service.shared.errors import SettingsError

_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "json", "console")
# What every process talks to unless told otherwise.
DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
DEFAULT_BUS_PREFIX = "avionte"


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential whose value never shows in `repr`, `str` or a log line."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


def url_passwords(url: str) -> tuple[str, ...]:
    """The passwords in `url` (a list of URLs), decoded and as written, for masking."""
    found: dict[str, None] = {}
    for each in brokers.split(url):
        parsed = URL(each)
        found.update(dict.fromkeys(p for p in (parsed.password, parsed.raw_password) if p))
    return tuple(found)


class EnvReader:
    """Typed reads of single variables; every error names the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        return None if value is None or not value.strip() else value.strip()

    def _secret_raw(self, name: str) -> str | None:
        """A secret from `NAME`, or from the file named by `NAME_FILE`."""
        direct, path = self._raw(name), self._raw(f"{name}_FILE")
        if direct is not None and path is not None:
            raise SettingsError(name, f"set either {name} or {name}_FILE, not both")
        if path is None:
            return direct
        try:
            content = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(
                f"{name}_FILE", f"cannot read the file ({type(exc).__name__})"
            ) from None
        if not content:
            raise SettingsError(f"{name}_FILE", "the file is empty")
        return content

    def text(self, name: str, default: str) -> str:
        return self._raw(name) or default

    def path(self, name: str) -> Path | None:
        raw = self._raw(name)
        return Path(raw) if raw is not None else None

    def readable(self, name: str) -> Path | None:
        path = self.path(name)
        if path is not None and not os.access(path, os.R_OK):
            raise SettingsError(name, f"cannot read {str(path)!r}")
        return path

    def secret(self, name: str) -> Secret | None:
        """One secret, whole (commas included), from `NAME` or `NAME_FILE`; None when unset."""
        raw = self._secret_raw(name)
        return Secret(raw) if raw is not None else None

    def secrets(self, name: str) -> tuple[Secret, ...]:
        raw = self._secret_raw(name)
        if raw is None:
            return ()
        values = tuple(Secret(part.strip()) for part in re.split(r"[,\n]", raw) if part.strip())
        if not values:
            raise SettingsError(name, "holds no value; separate several values with commas")
        return values

    def amqp_url(self, name: str, default: str) -> str:
        """One broker URL, or several nodes' separated by commas (`service.shared.brokers`)."""
        raw = self._secret_raw(name) or default
        brokers.validate(name, raw)
        return raw

    def prefix(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not _PREFIX.fullmatch(value):
            raise SettingsError(
                name,
                "must be 1-100 characters of letters, digits, '.', '_' or '-', "
                "starting with a letter or digit",
            )
        return value

    def integer(self, name: str, default: int, *, low: int, high: int | None = None) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(name, f"must be an integer, got {raw!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise SettingsError(name, f"must be an integer {bounds}, got {value}")
        return value

    def maybe_integer(self, name: str, *, low: int, high: int | None = None) -> int | None:
        return None if self._raw(name) is None else self.integer(name, low, low=low, high=high)

    def database_url(self, name: str) -> Secret | None:
        """A PostgreSQL URL (a secret, also from `NAME_FILE`), or None when unset."""
        raw = self._secret_raw(name)
        if raw is None:
            return None
        try:
            url = URL(raw)
        except (TypeError, ValueError):
            raise SettingsError(name, "is not a valid URL") from None
        if url.scheme not in ("postgresql", "postgres") or not url.host:
            raise SettingsError(name, "must be a postgresql:// URL with a host")
        return Secret(raw)

    def seconds(
        self, name: str, default: float, *, allow_zero: bool = False, high: float = 3600
    ) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(name, f"must be a number of seconds, got {raw!r}") from None
        above_floor = value >= 0 if allow_zero else value > 0
        if not above_floor or not value <= high:  # written so that NaN fails too
            least = "at least 0" if allow_zero else "more than 0"
            raise SettingsError(name, f"must be {least} and at most {high:g} seconds, got {raw}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            raise SettingsError(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value
