"""compose.yaml and env.example: services, volumes, health checks and settings."""

from __future__ import annotations

import re

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
    for name in ("RABBITMQ_PASSWORD", "WEBHOOK_API_KEYS", "WEBHOOK_SHARED_SECRETS"):
        assert "change-me" in values[name], f"{name} must be an obvious placeholder"
    for value in values.values():
        assert re.fullmatch(r"[A-Za-z0-9._-]*", value), "placeholders need no quoting"


def test_compose_services_volumes_and_health_checks() -> None:
    raw = compose()
    doc = interpolate(raw, env_example())
    services = doc["services"]
    assert set(services) == {"rabbitmq", "postgres", "receiver", "audit-log", "placement-sync"}
    named_volumes = set(doc["volumes"])

    def named_volume_at(service: Doc, path: str) -> str:
        for mount in service.get("volumes", []):
            source, _, target = str(mount).partition(":")
            if target.split(":")[0] == path:
                assert source in named_volumes, f"{source} is not a named volume"
                return source
        raise AssertionError(f"no volume at {path}")

    postgres = services["postgres"]
    assert postgres["profiles"] == ["dedupe"], "PostgreSQL is optional"
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
        assert "urllib" in test[3], name

    receiver = services["receiver"]
    env = compose_env(receiver)
    assert receiver["command"] == ["python", "-m", "service"]
    assert "replicas" not in receiver.get("deploy", {}), "one receiver per spool"
    named_volume_at(receiver, env["SPOOL_DIR"])
    assert "http://127.0.0.1:8080/healthz" in receiver["healthcheck"]["test"][3]
    drain = float(env["SHUTDOWN_GRACE"]) + float(env["PUBLISH_TIMEOUT"]) + RECEIVER_DRAIN_SLACK
    assert seconds(receiver["stop_grace_period"]) > drain

    for name in ("audit-log", "placement-sync"):
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
            if any(word in key for word in ("AMQP_URL", "WEBHOOK_", "PASS")):
                assert "${" in value, f"{key} must come from the env file"


def test_compose_settings_are_accepted() -> None:
    services = interpolate(compose(), env_example())["services"]
    receiver = Settings.from_env(compose_env(services["receiver"]))
    assert receiver.spool_dir is not None, "the spool is on"
    assert [k.value for k in receiver.api_keys] == [env_example()["WEBHOOK_API_KEYS"]]
    for name in ("audit-log", "placement-sync"):
        WorkerSettings.from_env(compose_env(services[name]))
