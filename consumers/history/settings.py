"""The event history's settings: where the database is, and how long events are kept."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from yarl import URL

from service.observability.redaction import redact_also
from service.shared.brokers import display_url
from service.shared.environment import EnvReader, Secret, url_passwords
from service.shared.errors import SettingsError

DEFAULT_RETENTION_DAYS = 30


@dataclass(frozen=True)
class HistorySettings:
    """HISTORY_DATABASE_URL (a secret) and HISTORY_RETENTION_DAYS."""

    database_url: Secret
    retention_days: int = DEFAULT_RETENTION_DAYS
    # How long the history worker waits at start for a database that is down.
    start_timeout: float = 60.0

    @property
    def display(self) -> str:
        """The database's URL without its password."""
        return display_url(URL(self.database_url.value))

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> HistorySettings:
        """Read both; raise `SettingsError` naming the variable that is missing or wrong."""
        env = EnvReader(environ)
        url = env.database_url("HISTORY_DATABASE_URL")
        if url is None:
            raise SettingsError(
                "HISTORY_DATABASE_URL",
                "is not set (nor HISTORY_DATABASE_URL_FILE); the event history needs a "
                "PostgreSQL URL",
            )
        days = env.integer("HISTORY_RETENTION_DAYS", DEFAULT_RETENTION_DAYS, low=1, high=3650)
        wait = env.seconds("HISTORY_START_TIMEOUT", cls.start_timeout, allow_zero=True)
        redact_also(*url_passwords(url.value))
        return cls(url, days, wait)
