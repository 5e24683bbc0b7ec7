"""Settings from the environment: defaults, validation naming the variable, masked secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings
from service.shared.environment import url_passwords
from service.shared.errors import SettingsError

BASE = {"WEBHOOK_API_KEYS": "key-one, key-two"}


def test_defaults_follow_the_contract() -> None:
    settings = Settings.from_env(BASE)
    assert settings.amqp_url.value == "amqp://guest:guest@localhost:5672/"
    assert settings.bus_prefix == "avionte"
    assert [key.value for key in settings.api_keys] == ["key-one", "key-two"]
    assert settings.shared_secrets == ()
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert settings.max_body_bytes == 1_048_576
    assert settings.publish_timeout == 5.0
    assert (settings.log_level, settings.log_format) == ("info", "auto")


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "AMQP_URL": "amqps://relay:pw@broker.internal:5671/prod",
            "BUS_PREFIX": "avionte-prod",
            "WEBHOOK_SHARED_SECRETS": "s1,s2",
            "HOST": "127.0.0.1",
            "PORT": "9000",
            "MAX_BODY_BYTES": "2048",
            "PUBLISH_TIMEOUT": "1.5",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
        }
    )
    assert settings.broker_display == "amqps://relay:***@broker.internal:5671/prod"
    assert settings.bus_prefix == "avionte-prod"
    assert [secret.value for secret in settings.shared_secrets] == ["s1", "s2"]
    assert (settings.host, settings.port, settings.max_body_bytes) == ("127.0.0.1", 9000, 2048)
    assert settings.publish_timeout == 1.5
    assert (settings.log_level, settings.log_format) == ("warning", "json")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "WEBHOOK_API_KEYS"),
        ({"WEBHOOK_API_KEYS": " , "}, "WEBHOOK_API_KEYS"),
        ({**BASE, "AMQP_URL": "http://localhost/"}, "AMQP_URL"),
        ({**BASE, "AMQP_URL": "amqp://"}, "AMQP_URL"),
        ({**BASE, "PORT": "eighty"}, "PORT"),
        ({**BASE, "PORT": "70000"}, "PORT"),
        ({**BASE, "MAX_BODY_BYTES": "0"}, "MAX_BODY_BYTES"),
        ({**BASE, "MAX_BODY_BYTES": str(16 * 1024 * 1024 + 1)}, "MAX_BODY_BYTES"),
        ({**BASE, "PUBLISH_TIMEOUT": "soon"}, "PUBLISH_TIMEOUT"),
        ({**BASE, "PUBLISH_TIMEOUT": "0"}, "PUBLISH_TIMEOUT"),
        ({**BASE, "PUBLISH_TIMEOUT": "nan"}, "PUBLISH_TIMEOUT"),
        ({**BASE, "SHUTDOWN_GRACE": "-1"}, "SHUTDOWN_GRACE"),
        ({**BASE, "ALLOWED_SOURCES": "10.0.0.0/8, nonsense"}, "ALLOWED_SOURCES"),
        ({**BASE, "TRUSTED_PROXIES": "300.1.1.1"}, "TRUSTED_PROXIES"),
        ({**BASE, "TLS_CERT_FILE": "/nonexistent/cert.pem"}, "TLS_CERT_FILE"),
        ({**BASE, "TLS_KEY_FILE": "/etc/hostname"}, "TLS_CERT_FILE"),
        ({**BASE, "MAX_HEADERS": "2"}, "MAX_HEADERS"),
        ({**BASE, "MAX_CONNECTIONS": "0"}, "MAX_CONNECTIONS"),
        ({**BASE, "AUTH_FAILURE_LIMIT": "-1"}, "AUTH_FAILURE_LIMIT"),
        ({**BASE, "BODY_TIMEOUT": "0"}, "BODY_TIMEOUT"),
        ({**BASE, "BUS_PREFIX": "has space"}, "BUS_PREFIX"),
        ({**BASE, "BUS_PREFIX": ".hidden"}, "BUS_PREFIX"),
        ({**BASE, "LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({**BASE, "LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")
    assert "\n" not in str(caught.value)


def test_secrets_never_show_in_repr_or_errors() -> None:
    env = {
        "AMQP_URL": "amqp://relay:broker-pw-31337@localhost/",
        "WEBHOOK_API_KEYS": "api-key-31337",
        "WEBHOOK_SHARED_SECRETS": "shared-31337",
    }
    text = repr(Settings.from_env(env)) + str(Settings.from_env(env).api_keys)
    assert "31337" not in text
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**env, "AMQP_URL": "ftp://user:broker-pw-31337@host/"})
    assert "31337" not in str(caught.value)


def test_secrets_from_files(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("  file-key-1\nfile-key-2\n\n")
    url = tmp_path / "url"
    url.write_text("amqp://u:p@rabbit:5672/vh\n")
    settings = Settings.from_env({"WEBHOOK_API_KEYS_FILE": str(keys), "AMQP_URL_FILE": str(url)})
    assert [key.value for key in settings.api_keys] == ["file-key-1", "file-key-2"]
    assert settings.amqp_url.value == "amqp://u:p@rabbit:5672/vh"


@pytest.mark.parametrize("content", [None, "", " \n"])
def test_unusable_secret_files_name_the_variable(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"WEBHOOK_SHARED_SECRETS_FILE": str(path)})
    assert caught.value.variable == "WEBHOOK_SHARED_SECRETS_FILE"


def test_a_secret_and_its_file_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("k")
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env({"WEBHOOK_API_KEYS": "k", "WEBHOOK_API_KEYS_FILE": str(path)})


def test_the_broker_password_is_masked_decoded_and_as_written() -> None:
    assert url_passwords("amqp://u:p%40ss@h/") == ("p@ss", "p%40ss")
    assert url_passwords("amqp://u:plain@h/") == ("plain",)
    assert url_passwords("amqp://h/") == ()
