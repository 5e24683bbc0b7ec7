"""The Avionté API client's settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from yarl import URL

from service.shared.environment import EnvReader, Secret
from service.shared.errors import SettingsError

DEFAULT_URL = "https://api.avionte.com"
DEFAULT_SCOPE = "avionte.aero.compasintegrationservice"


@dataclass(frozen=True)
class AvionteSettings:
    """Where the API is and how to authenticate; secrets masked in `repr`."""

    client_id: str
    client_secret: Secret
    api_key: Secret
    url: str = DEFAULT_URL
    scope: str = DEFAULT_SCOPE
    rate_limit: int = 5
    timeout: float = 10.0

    def secret_values(self) -> tuple[str, ...]:
        return (self.client_secret.value, self.api_key.value)

    @staticmethod
    def configured(environ: Mapping[str, str]) -> bool:
        """Whether AVIONTE_CLIENT_ID is set: the client is wanted."""
        return bool(environ.get("AVIONTE_CLIENT_ID", "").strip())

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AvionteSettings:
        """Read every variable; raise `SettingsError` naming the first missing or bad one."""
        env = EnvReader(environ)
        client_id = env.text("AVIONTE_CLIENT_ID", "")
        if not client_id:
            raise SettingsError("AVIONTE_CLIENT_ID", "is not set; the Avionté API client needs it")
        secrets = {}
        for name in ("AVIONTE_CLIENT_SECRET", "AVIONTE_API_KEY"):
            found = env.secret(name)
            if found is None:
                raise SettingsError(name, f"is not set (nor {name}_FILE); the client needs it")
            secrets[name] = found
        url = env.text("AVIONTE_API_URL", DEFAULT_URL).rstrip("/")
        parsed = URL(url)
        if parsed.scheme not in ("https", "http") or not parsed.host:
            raise SettingsError("AVIONTE_API_URL", "must be an https:// URL with a host")
        return cls(
            client_id=client_id,
            client_secret=secrets["AVIONTE_CLIENT_SECRET"],
            api_key=secrets["AVIONTE_API_KEY"],
            url=url,
            scope=env.text("AVIONTE_SCOPE", DEFAULT_SCOPE),
            rate_limit=env.integer("AVIONTE_RATE_LIMIT", cls.rate_limit, low=1, high=1000),
            timeout=env.seconds("AVIONTE_TIMEOUT", cls.timeout, high=300),
        )
