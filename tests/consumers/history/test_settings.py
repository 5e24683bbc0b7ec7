"""HISTORY_* settings: the URL as a secret (also from a file), and the retention's bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.history.settings import HistorySettings
from service.shared.errors import SettingsError

URL = "postgresql://relay:history-pw-31337@db.internal:5432/relay"


def test_the_url_from_a_file_is_a_secret_shown_without_its_password(tmp_path: Path) -> None:
    secret = tmp_path / "history-database-url"
    secret.write_text(URL + "\n")
    settings = HistorySettings.from_env({"HISTORY_DATABASE_URL_FILE": str(secret)})
    assert settings.database_url.value == URL
    assert settings.retention_days == 30
    assert "31337" not in repr(settings)
    assert settings.display == "postgresql://relay:***@db.internal:5432/relay"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "HISTORY_DATABASE_URL: is not set"),
        ({"HISTORY_DATABASE_URL": "mysql://x/y"}, "must be a postgresql:// URL with a host"),
        ({"HISTORY_DATABASE_URL": URL, "HISTORY_RETENTION_DAYS": "0"}, "from 1 to 3650, got 0"),
        ({"HISTORY_DATABASE_URL": URL, "HISTORY_RETENTION_DAYS": "-3"}, "from 1 to 3650, got -3"),
        ({"HISTORY_DATABASE_URL": URL, "HISTORY_RETENTION_DAYS": "week"}, "must be an integer"),
    ],
)
def test_what_cannot_be_used_is_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        HistorySettings.from_env(environ)
    assert "31337" not in str(raised.value)
