"""Receiver settings: read once from the environment into a frozen object."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL

from service import brokers
from service.errors import SettingsError
from service.sources import Network, SourcePolicy, parse_networks

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "json", "console")
# Whose trace a delivery's span joins: always its own, or an authenticated sender's.
TRACE_SENDER_CONTEXTS = ("ignore", "authenticated")
# RabbitMQ 4's default max_message_size; a larger body could never be published.
MAX_BODY_LIMIT = 16 * 1024 * 1024
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


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


@dataclass(frozen=True)
class Settings:
    """Everything the receiver is configured with."""

    amqp_url: Secret = Secret("amqp://guest:guest@localhost:5672/")
    bus_prefix: str = "avionte"
    api_keys: tuple[Secret, ...] = ()
    shared_secrets: tuple[Secret, ...] = ()
    host: str = "0.0.0.0"
    port: int = 8080
    max_body_bytes: int = 1_048_576
    publish_timeout: float = 5.0
    shutdown_grace: float = 0.0
    spool_dir: Path | None = None
    spool_max_bytes: int = 1024**3
    keepalive_timeout: float = 15.0
    body_timeout: float = 10.0
    max_headers: int = 64
    max_header_bytes: int = 8190
    # None: 1024, or fewer where RLIMIT_NOFILE does not leave room (`service.limits`).
    max_connections: int | None = None
    sources: SourcePolicy = field(default_factory=SourcePolicy)
    auth_failure_limit: int = 100
    auth_failure_window: float = 60.0
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    log_level: str = "info"
    log_format: str = "auto"
    trace_sender_context: str = "ignore"

    def secret_values(self) -> tuple[str, ...]:
        """Every secret this configuration holds, for masking in logs."""
        values = [s.value for s in (*self.api_keys, *self.shared_secrets)]
        return (*values, *url_passwords(self.amqp_url.value))

    @property
    def amqp_urls(self) -> tuple[str, ...]:
        """The nodes AMQP_URL lists, in order."""
        return brokers.split(self.amqp_url.value)

    @property
    def broker_display(self) -> str:
        """The broker URLs with their passwords masked, fit for logs."""
        return brokers.display(self.amqp_url.value)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and validate every variable; raise `SettingsError` naming the first bad one."""
        env = EnvReader(environ)
        settings = cls(
            amqp_url=Secret(env.amqp_url("AMQP_URL", cls.amqp_url.value)),
            bus_prefix=env.prefix("BUS_PREFIX", cls.bus_prefix),
            api_keys=env.secrets("WEBHOOK_API_KEYS"),
            shared_secrets=env.secrets("WEBHOOK_SHARED_SECRETS"),
            host=env.text("HOST", cls.host),
            port=env.integer("PORT", cls.port, low=0, high=65535),
            max_body_bytes=env.integer(
                "MAX_BODY_BYTES", cls.max_body_bytes, low=1, high=MAX_BODY_LIMIT
            ),
            publish_timeout=env.seconds("PUBLISH_TIMEOUT", cls.publish_timeout),
            shutdown_grace=env.seconds("SHUTDOWN_GRACE", cls.shutdown_grace, allow_zero=True),
            spool_dir=env.path("SPOOL_DIR"),
            spool_max_bytes=env.integer("SPOOL_MAX_BYTES", cls.spool_max_bytes, low=1),
            keepalive_timeout=env.seconds("KEEPALIVE_TIMEOUT", cls.keepalive_timeout),
            body_timeout=env.seconds("BODY_TIMEOUT", cls.body_timeout),
            max_headers=env.integer("MAX_HEADERS", cls.max_headers, low=8, high=1024),
            max_header_bytes=env.integer(
                "MAX_HEADER_BYTES", cls.max_header_bytes, low=256, high=65536
            ),
            max_connections=env.maybe_integer("MAX_CONNECTIONS", low=1),
            sources=SourcePolicy(
                allowed=env.networks("ALLOWED_SOURCES"),
                trusted_proxies=env.networks("TRUSTED_PROXIES"),
            ),
            auth_failure_limit=env.integer("AUTH_FAILURE_LIMIT", cls.auth_failure_limit, low=0),
            auth_failure_window=env.seconds("AUTH_FAILURE_WINDOW", cls.auth_failure_window),
            tls_cert_file=env.readable("TLS_CERT_FILE"),
            tls_key_file=env.readable("TLS_KEY_FILE"),
            log_level=env.choice("LOG_LEVEL", cls.log_level, LOG_LEVELS),
            log_format=env.choice("LOG_FORMAT", cls.log_format, LOG_FORMATS),
            trace_sender_context=env.choice(
                "TRACE_SENDER_CONTEXT", cls.trace_sender_context, TRACE_SENDER_CONTEXTS
            ),
        )
        if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
            missing = "TLS_KEY_FILE" if settings.tls_key_file is None else "TLS_CERT_FILE"
            raise SettingsError(missing, "TLS needs both TLS_CERT_FILE and TLS_KEY_FILE")
        if not settings.api_keys and not settings.shared_secrets:
            raise SettingsError(
                "WEBHOOK_API_KEYS",
                "no credential configured; set WEBHOOK_API_KEYS or WEBHOOK_SHARED_SECRETS "
                "(or their *_FILE forms)",
            )
        return settings


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

    def networks(self, name: str) -> tuple[Network, ...]:
        try:
            return parse_networks(self._raw(name) or "")
        except ValueError as exc:
            raise SettingsError(name, str(exc)) from None

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
        """One broker URL, or several nodes' separated by commas (`service.brokers`)."""
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
