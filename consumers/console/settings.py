"""Console settings: the bus as for workers, where to listen, who may come in, the history."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from yarl import URL

from consumers.history.settings import HistorySettings
from consumers.settings import WorkerSettings
from service.shared import brokers
from service.shared.environment import EnvReader, Secret, url_passwords
from service.shared.errors import SettingsError

MANAGEMENT_PORT = 15672


@dataclass(frozen=True)
class ConsoleSettings:
    """Everything `consumers console` is configured with."""

    worker: WorkerSettings
    password: Secret
    management_url: Secret
    user: str = "operator"
    host: str = "127.0.0.1"
    port: int = 8090
    page_size: int = 50
    # None without HISTORY_DATABASE_URL: the History page says how to have one.
    history: HistorySettings | None = None
    # Base URLs of receivers whose /readyz every page reflects.
    receivers: tuple[str, ...] = ()

    @property
    def management_display(self) -> str:
        """The management API's address, fit for pages and logs: no credentials."""
        return str(URL(self.management_url.value).with_user(None).with_query(None))

    def secret_values(self) -> tuple[str, ...]:
        return (
            *self.worker.secret_values(),
            self.password.value,
            *url_passwords(self.management_url.value),
            *(url_passwords(self.history.database_url.value) if self.history else ()),
            *(p for url in self.receivers for p in url_passwords(url)),
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], worker: WorkerSettings) -> ConsoleSettings:
        """Read CONSOLE_*, RABBITMQ_MANAGEMENT_URL, HISTORY_*; `SettingsError` names a bad one."""
        env = EnvReader(environ)
        password = env.secret("CONSOLE_PASSWORD")
        if password is None:
            raise SettingsError(
                "CONSOLE_PASSWORD",
                "is not set; the console needs a password (or CONSOLE_PASSWORD_FILE)",
            )
        management = env.secret("RABBITMQ_MANAGEMENT_URL")
        if management is None:
            management = Secret(derived_management_url(worker.amqp_url.value))
        else:
            url = URL(management.value)
            if url.scheme not in ("http", "https") or not url.host:
                raise SettingsError(
                    "RABBITMQ_MANAGEMENT_URL", "must be an http:// or https:// URL with a host"
                )
        user = env.text("CONSOLE_USER", cls.user)
        if ":" in user:
            raise SettingsError("CONSOLE_USER", "cannot contain ':' (HTTP Basic splits on it)")
        return cls(
            worker=worker,
            password=password,
            management_url=management,
            user=user,
            host=env.text("CONSOLE_HOST", cls.host),
            port=env.integer("CONSOLE_PORT", cls.port, low=0, high=65535),
            page_size=env.integer("CONSOLE_PAGE_SIZE", cls.page_size, low=1, high=1000),
            history=(
                HistorySettings.from_env(environ)
                if env.database_url("HISTORY_DATABASE_URL") is not None
                else None
            ),
            receivers=receiver_urls(env.text("CONSOLE_RECEIVERS", "")),
        )


def receiver_urls(value: str) -> tuple[str, ...]:
    """CONSOLE_RECEIVERS: comma-separated http(s) base URLs; `SettingsError` names a bad one."""
    urls = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        url = URL(item)
        if url.scheme not in ("http", "https") or not url.host:
            shown = str(url.with_user(None).with_query(None))
            raise SettingsError(
                "CONSOLE_RECEIVERS",
                f"{shown!r} is not an http:// or https:// URL with a host"
                " (comma-separated base URLs, such as http://127.0.0.1:8080)",
            )
        urls.append(item)
    return tuple(urls)


def derived_management_url(amqp_url: str) -> str:
    """The management API of AMQP_URL's first node: same host and credentials, port 15672.

    `amqps://` gives `https://`. The vhost is not part of it; the console adds it.
    """
    first = URL(brokers.split(amqp_url)[0])
    scheme = "https" if first.scheme == "amqps" else "http"
    url = URL.build(scheme=scheme, host=first.host or "localhost", port=MANAGEMENT_PORT, path="/")
    if first.user is not None:
        url = url.with_user(first.user).with_password(first.password)
    return str(url)
