"""Worker settings: the dedupe store's variables, their defaults, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.settings import WorkerSettings
from service.shared.errors import SettingsError


def test_defaults() -> None:
    settings = WorkerSettings.from_env({})
    assert settings.dedupe_database_url is None
    assert (settings.dedupe_lease, settings.dedupe_retention) == (30.0, 7 * 24 * 3600.0)
    assert settings.metrics_port is None
    assert settings.vhost == "/"


def test_the_database_url_is_a_secret_also_read_from_a_file(tmp_path: Path) -> None:
    url = "postgresql://relay:db-pw-31337@db.internal:5432/relay"
    secret = tmp_path / "url"
    secret.write_text(url + "\n")
    settings = WorkerSettings.from_env({"DEDUPE_DATABASE_URL_FILE": str(secret)})
    assert settings.dedupe_database_url is not None
    assert settings.dedupe_database_url.value == url
    assert "31337" not in repr(settings)
    assert "db-pw-31337" in settings.secret_values()


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DEDUPE_DATABASE_URL": "mysql://db/x"}, "DEDUPE_DATABASE_URL"),
        ({"DEDUPE_DATABASE_URL": "postgresql:///no-host"}, "DEDUPE_DATABASE_URL"),
        ({"DEDUPE_LEASE": "0"}, "DEDUPE_LEASE"),
        ({"DEDUPE_RETENTION": "forever"}, "DEDUPE_RETENTION"),
        ({"DEDUPE_RETENTION": str(400 * 24 * 3600)}, "DEDUPE_RETENTION"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        WorkerSettings.from_env(env)
    assert caught.value.variable == variable
    assert "31337" not in str(caught.value)


def test_the_vhost_comes_from_the_broker_url() -> None:
    settings = WorkerSettings.from_env({"AMQP_URL": "amqp://u:p@broker/staging"})
    assert settings.vhost == "staging"
