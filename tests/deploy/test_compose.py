"""compose.yaml and env.example: services, volumes, health checks and settings."""

from __future__ import annotations

import re

from yarl import URL

from consumers.console.settings import ConsoleSettings
from consumers.history.settings import DEFAULT_RETENTION_DAYS, HistorySettings
from consumers.settings import WorkerSettings
from service.settings import Settings
from tests.deploy.manifests import (
    COMPOSE,
    DOCKERFILE,
    RECEIVER_DRAIN_SLACK,
    TMP,
    WORKER_BROKER_STEP,
    Doc,
    compose,
    compose_env,
    env_example,
    interpolate,
)


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", duration)
    assert match, f"unexpected duration {duration!r}"
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


def test_env_example_holds_placeholders_only() -> None:
    values = env_example()
    for name in (
        "RABBITMQ_PASSWORD",
        "WEBHOOK_API_KEYS",
        "WEBHOOK_SHARED_SECRETS",
        "CONSOLE_PASSWORD",
    ):
        assert "change-me" in values[name], f"{name} must be an obvious placeholder"
    for value in values.values():
        assert re.fullmatch(r"[A-Za-z0-9._-]*", value), "placeholders need no quoting"
    # The settings shown commented out, too: every password in them is a placeholder.
    for name, value in env_example(optional=True).items():
        if "PASSWORD" in name or "DATABASE_URL" in name:
            assert "change-me" in value, f"{name} must be an obvious placeholder"


def test_compose_services_volumes_and_health_checks() -> None:
    raw = compose()
    doc = interpolate(raw, env_example())
    services = doc["services"]
    assert set(services) == {
        "rabbitmq",
        "postgres",
        "receiver",
        "audit-log",
        "placement-sync",
        "history",
        "console",
    }
    named_volumes = set(doc["volumes"])

    def named_volume_at(service: Doc, path: str) -> str:
        for mount in service.get("volumes", []):
            source, _, target = str(mount).partition(":")
            if target.split(":")[0] == path:
                assert source in named_volumes, f"{source} is not a named volume"
                return source
        raise AssertionError(f"no volume at {path}")

    postgres = services["postgres"]
    assert postgres["profiles"] == ["dedupe", "history"], "PostgreSQL is optional"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    named_volume_at(postgres, "/var/lib/postgresql/data")

    rabbitmq = services["rabbitmq"]
    assert rabbitmq["image"] == "rabbitmq:4.3-management"
    assert "rabbitmq-diagnostics" in rabbitmq["healthcheck"]["test"]
    named_volume_at(rabbitmq, "/var/lib/rabbitmq")
    assert rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"] == env_example()["RABBITMQ_PASSWORD"]

    relay = {name: s for name, s in services.items() if name not in ("rabbitmq", "postgres")}
    for name, service in relay.items():
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert service["read_only"] is True
        assert TMP in service["tmpfs"]
        assert service["cap_drop"] == ["ALL"]
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        env = compose_env(service)
        assert env["AMQP_URL"].startswith("amqp://relay:change-me"), name
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name
        # The console asks every request for a password: its check only connects.
        assert ("socket" if name == "console" else "urllib") in test[3], name

    receiver = services["receiver"]
    env = compose_env(receiver)
    assert receiver["command"] == ["python", "-m", "service"]
    assert "replicas" not in receiver.get("deploy", {}), "one receiver per spool"
    named_volume_at(receiver, env["SPOOL_DIR"])
    assert "http://127.0.0.1:8080/healthz" in receiver["healthcheck"]["test"][3]
    drain = float(env["SHUTDOWN_GRACE"]) + float(env["PUBLISH_TIMEOUT"]) + RECEIVER_DRAIN_SLACK
    assert seconds(receiver["stop_grace_period"]) > drain

    for name in ("audit-log", "placement-sync", "history"):
        worker = services[name]
        env = compose_env(worker)
        assert worker["command"] == ["python", "-m", "consumers", "run", name.replace("-", "_")]
        replicas = worker["deploy"]["replicas"]
        assert isinstance(replicas, int)
        assert replicas >= 1
        port = env.get("METRICS_PORT", "9100")
        assert f"http://127.0.0.1:{port}/healthz" in worker["healthcheck"]["test"][3]
        steps = float(env["SHUTDOWN_TIMEOUT"]) + 3 * WORKER_BROKER_STEP
        assert seconds(worker["stop_grace_period"]) > steps
    named_volume_at(services["audit-log"], compose_env(services["audit-log"])["AUDIT_LOG_DIR"])

    # Secrets come from the env file, never written into compose.yaml itself.
    for service in raw["services"].values():
        for key, value in compose_env(service).items():
            if any(
                word in key
                for word in ("AMQP_URL", "WEBHOOK_", "PASS", "DATABASE_URL", "MANAGEMENT_URL")
            ):
                assert "${" in value, f"{key} must come from the env file"


def test_compose_settings_are_accepted() -> None:
    services = interpolate(compose(), env_example())["services"]
    receiver = Settings.from_env(compose_env(services["receiver"]))
    assert receiver.spool_dir is not None, "the spool is on"
    assert [k.value for k in receiver.api_keys] == [env_example()["WEBHOOK_API_KEYS"]]
    for name in ("audit-log", "placement-sync", "history"):
        WorkerSettings.from_env(compose_env(services[name]))
    HistorySettings.from_env(compose_env(services["history"]))
    env = compose_env(services["console"])
    ConsoleSettings.from_env(env, WorkerSettings.from_env(env))


def test_compose_console_on_the_hosts_loopback() -> None:
    """The console listens in its container, is published on 127.0.0.1 only, and sees the
    broker's management API and the receiver over the compose network."""
    raw = compose()["services"]
    services = interpolate(compose(), env_example())["services"]
    console, receiver = services["console"], services["receiver"]
    assert console["command"] == ["python", "-m", "consumers", "console"]
    assert "profiles" not in console, "the console runs by default"
    assert raw["console"]["environment"]["CONSOLE_PASSWORD"].startswith("${CONSOLE_PASSWORD:?")
    env = compose_env(console)
    settings = ConsoleSettings.from_env(env, WorkerSettings.from_env(env))
    assert settings.password.value == env_example()["CONSOLE_PASSWORD"]
    assert settings.host == "0.0.0.0", "reachable through the published port"
    assert console["ports"] == [f"127.0.0.1:{settings.port}:{settings.port}"]
    assert f"'127.0.0.1', {settings.port}" in console["healthcheck"]["test"][3]
    assert settings.history is None, "no History page without HISTORY_DATABASE_URL"

    management = URL(settings.management_url.value)
    rabbitmq = compose_env(services["rabbitmq"])
    assert (management.scheme, management.host, management.port) == ("http", "rabbitmq", 15672)
    assert management.user == rabbitmq["RABBITMQ_DEFAULT_USER"]
    assert management.password == rabbitmq["RABBITMQ_DEFAULT_PASS"]
    assert "15672" in str(services["rabbitmq"]["ports"]), "the management plugin's port"

    receivers = [URL(url) for url in settings.receivers]
    assert receivers, "the console watches the receiver"
    for url in receivers:
        assert url.scheme == "http"
        assert url.host in services, f"{url.host} is not a compose service"
        target = compose_env(services[str(url.host)])
        assert services[str(url.host)]["command"] == ["python", "-m", "service"], url
        assert url.port == int(target.get("PORT", Settings.port)), f"{url}: not its port"
        assert url.path in ("", "/"), "a base URL: the console adds /readyz"
    assert URL("http://receiver:8080") in receivers
    assert receiver["command"] == ["python", "-m", "service"]


def test_compose_profiles_start_what_they_need() -> None:
    """Each profile, alone or with the others, brings up every service its services need."""
    services = compose()["services"]
    profiles = {p for service in services.values() for p in service.get("profiles", [])}
    assert profiles == {"dedupe", "history"}
    for chosen in ({"dedupe"}, {"history"}, {"dedupe", "history"}, set()):
        active = {
            name
            for name, service in services.items()
            if not service.get("profiles") or chosen & set(service["profiles"])
        }
        for name in active:
            for needed, condition in services[name].get("depends_on", {}).items():
                if condition.get("required", True):
                    assert needed in active, f"{name} needs {needed} under {sorted(chosen)}"


def test_compose_history_uses_the_compose_postgres() -> None:
    """The history is off by default, and on with its profile needs only POSTGRES_PASSWORD."""
    raw = compose()["services"]
    history, postgres = raw["history"], raw["postgres"]
    assert history["profiles"] == ["history"], "the history is optional"
    assert history["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert history["command"][-1] == "history"

    optional = env_example(optional=True)
    shown = optional.pop("HISTORY_DATABASE_URL")
    services = interpolate(compose(), optional)["services"]
    env = compose_env(services["history"])
    # Without HISTORY_DATABASE_URL in deploy/.env: the URL env.example shows, assembled.
    assert env["HISTORY_DATABASE_URL"] == shown
    url = URL(env["HISTORY_DATABASE_URL"])
    database = compose_env(interpolate(postgres, optional))
    assert url.scheme == "postgresql"
    assert (url.host, url.port) == ("postgres", 5432), "the compose PostgreSQL"
    assert url.user == database["POSTGRES_USER"]
    assert url.password == database["POSTGRES_PASSWORD"] == optional["POSTGRES_PASSWORD"]
    assert url.path == f"/{database['POSTGRES_DB']}"
    settings = HistorySettings.from_env(env)
    assert settings.database_url.value == shown
    assert settings.retention_days == DEFAULT_RETENTION_DAYS
    assert "change-me" not in settings.display, "its password is not shown"

    # The console's History page reads HISTORY_DATABASE_URL from deploy/.env, as the
    # history service does once it is set; the history profile also starts it after
    # PostgreSQL.
    assert compose_env(interpolate(raw["console"], optional))["HISTORY_DATABASE_URL"] == ""
    assert raw["console"]["depends_on"]["postgres"] == {
        "condition": "service_healthy",
        "required": False,
    }
    chosen = {**optional, "HISTORY_DATABASE_URL": shown}
    written = {name: compose_env(interpolate(raw[name], chosen)) for name in ("history", "console")}
    assert written["console"]["HISTORY_DATABASE_URL"] == written["history"]["HISTORY_DATABASE_URL"]
    page = ConsoleSettings.from_env(written["console"], WorkerSettings.from_env(written["console"]))
    assert page.history is not None
    assert page.history.database_url.value == shown

    # deploy/.env may name another database or server, and another retention.
    other = "postgresql://history:change-me@db.example.com:5432/history"
    chosen = {**optional, "HISTORY_DATABASE_URL": other, "HISTORY_RETENTION_DAYS": "7"}
    env = compose_env(interpolate(raw["history"], chosen))
    settings = HistorySettings.from_env(env)
    assert (settings.database_url.value, settings.retention_days) == (other, 7)
