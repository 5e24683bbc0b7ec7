"""Receiver settings: read once from the environment into a frozen object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.shared import brokers
from service.shared.environment import (
    DEFAULT_AMQP_URL,
    DEFAULT_BUS_PREFIX,
    LOG_FORMATS,
    LOG_LEVELS,
    EnvReader,
    Secret,
    url_passwords,
)
from service.shared.errors import SettingsError
from service.sources import Network, SourcePolicy, parse_networks

# Whose trace a delivery's span joins: always its own, or an authenticated sender's.
TRACE_SENDER_CONTEXTS = ("ignore", "authenticated")
# RabbitMQ 4's default max_message_size; a larger body could never be published.
MAX_BODY_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything the receiver is configured with."""

    amqp_url: Secret = Secret(DEFAULT_AMQP_URL)
    bus_prefix: str = DEFAULT_BUS_PREFIX
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
    # None: 1024, or fewer where RLIMIT_NOFILE does not leave room (`service.http.limits`).
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
        env = ReceiverEnv(environ)
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


class ReceiverEnv(EnvReader):
    """The environment readers, and one for the receiver's network lists."""

    def networks(self, name: str) -> tuple[Network, ...]:
        try:
            return parse_networks(self._raw(name) or "")
        except ValueError as exc:
            raise SettingsError(name, str(exc)) from None
