"""Worker settings: the broker and prefix as for the receiver, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from yarl import URL

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


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker process is configured with."""

    amqp_url: Secret = Secret(DEFAULT_AMQP_URL)
    bus_prefix: str = DEFAULT_BUS_PREFIX
    shutdown_timeout: float = 30.0
    # None: 9100, or a free port when another worker on the host has 9100 (`metrics`).
    metrics_port: int | None = None
    dedupe_database_url: Secret | None = None
    dedupe_lease: float = 30.0
    # How long a worker waits at start for a dedupe store that is down, before giving up.
    dedupe_start_timeout: float = 60.0
    dedupe_retention: float = 7 * 24 * 3600.0
    log_level: str = "info"
    log_format: str = "auto"

    def secret_values(self) -> tuple[str, ...]:
        """The broker's and the dedupe database's passwords, for masking in logs."""
        database = self.dedupe_database_url
        return (
            *url_passwords(self.amqp_url.value),
            *(url_passwords(database.value) if database else ()),
        )

    @property
    def vhost(self) -> str:
        """The broker's virtual host, as in AMQP_URL (`/` when it names none)."""
        # Every node of the list names the same one (`service.shared.brokers.validate`).
        first = brokers.split(self.amqp_url.value)[0]
        return URL(first).path.removeprefix("/") or "/"

    @property
    def scope(self) -> str:
        """What rows in a shared database are keyed by: the vhost and BUS_PREFIX."""
        # A prefix holds no '/', so "vhost/prefix" cannot be mistaken for another scope.
        vhost = self.vhost
        return self.bus_prefix if vhost == "/" else f"{vhost}/{self.bus_prefix}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WorkerSettings:
        """Read the broker, prefix, shutdown, metrics and log settings."""
        env = EnvReader(environ)
        return cls(
            amqp_url=Secret(env.amqp_url("AMQP_URL", cls.amqp_url.value)),
            bus_prefix=env.prefix("BUS_PREFIX", cls.bus_prefix),
            shutdown_timeout=env.seconds("SHUTDOWN_TIMEOUT", cls.shutdown_timeout),
            metrics_port=env.maybe_integer("METRICS_PORT", low=0, high=65535),
            dedupe_database_url=env.database_url("DEDUPE_DATABASE_URL"),
            dedupe_lease=env.seconds("DEDUPE_LEASE", cls.dedupe_lease),
            dedupe_start_timeout=env.seconds("DEDUPE_START_TIMEOUT", cls.dedupe_start_timeout),
            dedupe_retention=env.seconds(
                "DEDUPE_RETENTION", cls.dedupe_retention, high=365 * 24 * 3600
            ),
            log_level=env.choice("LOG_LEVEL", cls.log_level, LOG_LEVELS),
            log_format=env.choice("LOG_FORMAT", cls.log_format, LOG_FORMATS),
        )
