"""The deployment files: Dockerfile, compose.yaml and the Kubernetes manifests.

Nothing here needs a container engine or a cluster. Kubernetes manifests are validated
against the Kubernetes OpenAPI schemas (kubernetes-validate, offline); custom resources
of the operators they rely on are checked field by field. Kustomize renders the base and
the overlay when a `kustomize` or `kubectl` binary is on PATH. The image is proven by
building a virtual environment from exactly the files the Dockerfile copies, the way its
builder stage does, and running the commands the image, compose.yaml and the manifests
run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from consumers.console.settings import ConsoleSettings
from consumers.settings import WorkerSettings
from service import tracing
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "env.example"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))

# The oldest Kubernetes the manifests are meant for, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
DEFAULT_BUS_PREFIX = Settings.bus_prefix
# Each shutdown step of a worker that talks to the broker is bounded at this (README).
WORKER_BROKER_STEP = 5
# After SHUTDOWN_GRACE, the receiver waits this long past PUBLISH_TIMEOUT for publishes.
RECEIVER_DRAIN_SLACK = 5
# Every container gets an emptyDir here, the one writable place besides its volumes.
TMP = "/tmp"  # noqa: S108

Doc = dict[str, Any]


# ------------------------------------------------------------------------------ helpers


def load_docs(path: Path) -> list[Doc]:
    with path.open(encoding="utf-8") as file:
        docs = [doc for doc in yaml.safe_load_all(file) if doc is not None]
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
    return docs


def kustomization(directory: Path) -> Doc:
    docs = load_docs(directory / "kustomization.yaml")
    assert len(docs) == 1
    return docs[0]


def included(directory: Path) -> list[str]:
    """What a kustomization takes in: its resources, then its components."""
    spec = kustomization(directory)
    return [*spec.get("resources", []), *spec.get("components", [])]


def resource_files(directory: Path) -> list[Path]:
    """Every manifest file a kustomization includes, following directories it lists."""
    files: list[Path] = []
    for entry in included(directory):
        path = (directory / entry).resolve()
        files.extend(resource_files(path) if path.is_dir() else [path])
    return files


def component_dirs(directory: Path) -> list[Path]:
    found = []
    for entry in included(directory):
        path = (directory / entry).resolve()
        if path.is_dir():
            if kustomization(path)["kind"] == "Component":
                found.append(path)
            found.extend(component_dirs(path))
    return found


def patch_files(directory: Path) -> list[Path]:
    found = [
        (directory / patch["path"]).resolve()
        for patch in kustomization(directory).get("patches", [])
        if "path" in patch
    ]
    for entry in included(directory):
        path = (directory / entry).resolve()
        if path.is_dir():
            found.extend(patch_files(path))
    return found


def all_manifest_files() -> list[Path]:
    files = {path for overlay in [BASE, *OVERLAYS] for path in resource_files(overlay)}
    return sorted(files)


def file_docs() -> list[Doc]:
    """The manifests as written: the base and every overlay's own files, unpatched."""
    return [doc for path in all_manifest_files() for doc in load_docs(path)]


def kustomize_command() -> list[str] | None:
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    return None


@functools.cache
def rendered(directory: Path) -> list[Doc]:
    command = kustomize_command()
    if command is None:
        pytest.skip("no kustomize or kubectl on PATH; the structural checks still ran")
    result = subprocess.run(
        [*command, str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def ident(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def named(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def pod_spec(deployment: Doc) -> Doc:
    spec: Doc = deployment["spec"]["template"]["spec"]
    return spec


def pod_labels(deployment: Doc) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def container_env(container: Doc) -> dict[str, str | None]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def port_number(container: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert numbers, f"container {container['name']} has no port named {port!r}"
    number: int = numbers[0]
    return number


def role(container: Doc) -> str:
    """`receiver`, `worker` or `console`, from the command the container runs."""
    command = container.get("command", [])
    if command == ["python", "-m", "service"]:
        return "receiver"
    if command[:4] == ["python", "-m", "consumers", "run"] and len(command) > 4:
        return "worker"
    if command == ["python", "-m", "consumers", "console"]:
        return "console"
    return f"unknown command {command}"


def consumer_modules(command: list[str]) -> list[str]:
    """The NAME arguments of `python -m consumers run NAME... [--concurrency N]`."""
    names: list[str] = []
    args = iter(command[4:])
    for arg in args:
        if arg.startswith("--"):
            if "=" not in arg:
                next(args, None)
            continue
        names.append(arg)
    return names


def volume_for(spec: Doc, container: Doc, path: str) -> tuple[Doc, str]:
    """The pod volume holding `path` in the container, and `path` relative to its mount."""
    mounts = sorted(
        (
            m
            for m in container.get("volumeMounts", [])
            if f"{path}/".startswith(f"{m['mountPath'].rstrip('/')}/")
        ),
        key=lambda m: len(m["mountPath"]),
    )
    assert mounts, f"{container['name']}: nothing is mounted at {path}"
    mount = mounts[-1]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    assert mount["name"] in volumes, f"{container['name']}: no volume {mount['name']}"
    return volumes[mount["name"]], path[len(mount["mountPath"]) :].strip("/")


def secret_value(docs: list[Doc], volume: Doc, relative: str) -> str:
    """What a file in a mounted Secret volume holds, from the Secret in `docs`."""
    source = volume.get("secret")
    assert source, f"volume {volume['name']} is not a Secret"
    secrets = named(docs, "Secret")
    assert source["secretName"] in secrets, f"no Secret {source['secretName']}"
    secret = secrets[source["secretName"]]
    items = {item["path"]: item["key"] for item in source.get("items", [])} or {
        key: key for key in secret.get("stringData", {})
    }
    assert relative in items, f"Secret volume {volume['name']} has no file {relative}"
    data: dict[str, str] = secret.get("stringData", {})
    assert items[relative] in data, f"Secret {source['secretName']} has no {items[relative]}"
    value: str = data[items[relative]]
    return value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.keyword} is not in exec form"
        return [str(part) for part in value]


@functools.cache
def dockerfile() -> tuple[Instruction, ...]:
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends in a line continuation"
    args: dict[str, str] = {}
    stage = ""
    instructions: list[Instruction] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stage:
            name, _, default = rest.partition("=")
            args[name] = default
        if keyword == "FROM":
            image, *alias = rest.split()
            rest = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
            stage = alias[-1] if alias else rest
        instructions.append(Instruction(stage, keyword, rest.strip()))
    return tuple(instructions)


def stage(name: str) -> list[Instruction]:
    return [i for i in dockerfile() if i.stage == name]


def final_stage() -> list[Instruction]:
    return stage(dockerfile()[-1].stage)


def builder_stage() -> list[Instruction]:
    sources = [i.args.split("--from=")[1].split()[0] for i in final_stage() if "--from=" in i.args]
    assert len(set(sources)) == 1, "the final stage copies from one builder stage"
    return stage(sources[0])


def healthcheck_command() -> list[str]:
    [check] = [i for i in final_stage() if i.keyword == "HEALTHCHECK"]
    return Instruction(check.stage, "HEALTHCHECK", check.args.split(" CMD ", 1)[1]).exec_form()


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in final_stage():
        if instruction.keyword == "ENV":
            env.update(dict(part.split("=", 1) for part in shlex.split(instruction.args)))
    return env


def test_dockerfile_is_two_slim_stages() -> None:
    froms = [i.args for i in dockerfile() if i.keyword == "FROM"]
    assert froms == ["python:3.11-slim", "python:3.11-slim"]
    build = " ".join(i.args for i in builder_stage() if i.keyword == "RUN")
    assert "pip install -c constraints.txt ." in build


def test_final_stage_runs_unprivileged_and_has_no_compiler() -> None:
    final = final_stage()
    [user] = [i.args for i in final if i.keyword == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric user, so that runAsNonRoot can verify it"
    assert int(uid) > 0, "not root"
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    for tool in ("gcc", "build-essential", "g++", "clang", "apt-get install"):
        assert tool not in runs
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert copies
    assert all(c.startswith("--from=") for c in copies), "only the venv is copied"
    env = image_env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_image_command_and_healthcheck() -> None:
    [cmd] = [i for i in final_stage() if i.keyword == "CMD"]
    assert cmd.exec_form() == ["python", "-m", "service"]
    check = healthcheck_command()
    assert check[:2] == ["python", "-c"], "the slim image has no curl"
    assert "urllib" in check[2]
    assert "http://127.0.0.1:8080/healthz" in check[2]


def test_image_user_owns_the_mounted_directories() -> None:
    """Named volumes start with the image's ownership: the spool must be writable."""
    uid = next(i.args for i in final_stage() if i.keyword == "USER").split(":")[0]
    runs = " ".join(i.args for i in final_stage() if i.keyword == "RUN")
    services = load_docs(COMPOSE)[0]["services"]
    for name, variable in (("receiver", "SPOOL_DIR"), ("audit-log", "AUDIT_LOG_DIR")):
        directory = services[name]["environment"][variable]
        assert directory in runs, f"the image does not create {directory}"
    assert f"chown -R {uid}:{uid}" in runs


# ------------------------------------------------------------------- compose and env file


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, over a whole document."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        current = env.get(name)
        empty = current is None or ((operator or "").startswith(":") and current == "")
        if operator and operator.endswith("?") and empty:
            raise AssertionError(f"{name} is required ({argument}) but env.example lacks it")
        if operator and operator.endswith("-") and empty:
            return str(argument)
        return current or ""

    return _VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def compose() -> Doc:
    [doc] = load_docs(COMPOSE)
    return doc


def compose_env(service: Doc) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return {key: str(value) for key, value in env.items()}


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


# ------------------------------------------------------------- Kubernetes: structure


def test_every_manifest_is_part_of_a_kustomization() -> None:
    listed = {K8S / "overlays" / o.name / "kustomization.yaml" for o in OVERLAYS}
    listed |= {BASE / "kustomization.yaml", *all_manifest_files()}
    listed |= {p for d in [BASE, *OVERLAYS] for p in patch_files(d)}
    listed |= {c / "kustomization.yaml" for d in OVERLAYS for c in component_dirs(d)}
    on_disk = {p.resolve() for p in K8S.rglob("*.yaml")}
    assert on_disk - {p.resolve() for p in listed} == set()
    assert OVERLAYS, "at least the example overlay"


@pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_kustomization_entries_exist(directory: Path) -> None:
    spec = kustomization(directory)
    assert spec["kind"] == "Kustomization"
    for entry in spec.get("resources", []):
        path = directory / entry
        assert path.is_file() or (path / "kustomization.yaml").is_file(), entry
    for patch in spec.get("patches", []):
        assert "path" in patch or "patch" in patch
        if "path" in patch:
            assert (directory / patch["path"]).is_file(), patch["path"]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlay_patches_target_existing_resources(overlay: Path) -> None:
    components = {p for c in component_dirs(overlay) for p in resource_files(c)}
    docs = [
        doc for path in resource_files(overlay) if path not in components for doc in load_docs(path)
    ]
    present = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    for patch in kustomization(overlay).get("patches", []):
        if "path" in patch:
            for doc in load_docs(overlay / patch["path"]):
                assert (doc["kind"], doc["metadata"]["name"]) in present, ident(doc)
            continue
        target = patch["target"]
        key = (target["kind"], target["name"])
        assert key in present, f"patch target {key} does not exist"
        for operation in yaml.safe_load(patch["patch"]):
            node: Any = present[key]
            *parents, last = operation["path"].strip("/").split("/")
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            if operation["op"] in ("replace", "remove"):
                assert last in node, f"{operation['path']} not in {key}"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlay_sets_namespace_and_image(overlay: Path) -> None:
    spec = kustomization(overlay)
    assert spec.get("namespace"), "an overlay picks the namespace"
    images = {image["name"]: image for image in spec.get("images", [])}
    assert images["avionte-relay"].get("newTag"), "an overlay pins the image tag"


# ------------------------------------------------------ Kubernetes: schema validation


BUILTIN_GROUPS = {"v1", "apps/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1"}


def validate(doc: Doc) -> None:
    """Validate a manifest: Kubernetes kinds by schema, operator kinds field by field."""
    kind = doc.get("kind")
    if doc.get("apiVersion") in BUILTIN_GROUPS:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(str(part) for part in exc.path)
                raise AssertionError(f"{ident(doc)} at {where}: {exc.message} ({version})") from exc
        return
    checks = {
        ("rabbitmq.com/v1beta1", "RabbitmqCluster"): check_rabbitmq_cluster,
        ("keda.sh/v1alpha1", "ScaledObject"): check_scaled_object,
        ("keda.sh/v1alpha1", "TriggerAuthentication"): check_trigger_authentication,
        ("monitoring.coreos.com/v1", "ServiceMonitor"): check_service_monitor,
    }
    check = checks.get((str(doc.get("apiVersion")), str(kind)))
    assert check, f"no schema and no check for {doc.get('apiVersion')} {kind}"
    check_metadata(doc)
    check(doc)


def check_metadata(doc: Doc) -> None:
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, ident(doc)
    metadata = doc["metadata"]
    assert set(metadata) <= {"name", "namespace", "labels", "annotations"}, ident(doc)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", metadata["name"]), ident(doc)
    for key in ("labels", "annotations"):
        assert all(isinstance(v, str) for v in metadata.get(key, {}).values()), ident(doc)


def fields(node: Any, where: str, required: set[str], allowed: set[str]) -> Doc:
    assert isinstance(node, dict), f"{where}: not a mapping"
    assert required <= set(node), f"{where}: missing {sorted(required - set(node))}"
    assert set(node) <= required | allowed, f"{where}: unknown {sorted(set(node) - allowed)}"
    return node


def check_rabbitmq_cluster(doc: Doc) -> None:
    spec = fields(
        doc["spec"],
        "spec",
        {"replicas", "persistence", "resources", "rabbitmq"},
        {"image", "imagePullSecrets", "service", "affinity", "tolerations", "tls", "override"}
        | {"terminationGracePeriodSeconds", "skipPostDeploySteps", "secretBackend"}
        | {"delayStartSeconds", "autoEnableAllFeatureFlags"},
    )
    assert spec["replicas"] == 3, "three nodes keep a quorum through the loss of one"
    persistence = fields(spec["persistence"], "persistence", {"storage"}, {"storageClassName"})
    assert re.fullmatch(r"\d+(Gi|Ti)", persistence["storage"])
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(spec["resources"][part]), part
    rabbitmq = fields(
        spec["rabbitmq"],
        "rabbitmq",
        {"additionalPlugins"},
        {"additionalConfig", "advancedConfig", "envConfig", "erlangInetConfig"},
    )
    assert "rabbitmq_prometheus" in rabbitmq["additionalPlugins"]
    assert isinstance(rabbitmq.get("additionalConfig", ""), str)
    assert re.fullmatch(r"rabbitmq:4\.\d+-management", spec["image"]), "a RabbitMQ 4 release"
    config = {
        key.strip(): value.strip()
        for key, _, value in (
            line.partition("=") for line in rabbitmq["additionalConfig"].splitlines()
        )
        if key.strip() and not key.strip().startswith("#")
    }
    # Quorum queues sized for the three nodes; no setting RabbitMQ 4.3 ignores or refuses.
    assert config["quorum_queue.initial_cluster_size"] == str(spec["replicas"])
    assert config["quorum_queue.continuous_membership_reconciliation.target_group_size"] == str(
        spec["replicas"]
    )
    assert not {k for k in config if k.startswith(("cluster_partition_handling", "ha-"))}


def check_scaled_object(doc: Doc) -> None:
    spec = fields(
        doc["spec"],
        "spec",
        {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "triggers"},
        {"pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount"}
        | {"advanced", "fallback"},
    )
    target = fields(spec["scaleTargetRef"], "scaleTargetRef", {"name"}, {"apiVersion", "kind"})
    assert target.get("kind", "Deployment") == "Deployment"
    for key in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"):
        assert isinstance(spec.get(key, 0), int), key
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["triggers"], "at least one trigger"
    for trigger in spec["triggers"]:
        fields(trigger, "trigger", {"type", "metadata"}, {"name", "authenticationRef"})
        # KEDA reads trigger metadata as strings only: a bare number is rejected.
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger
        if "authenticationRef" in trigger:
            fields(trigger["authenticationRef"], "authenticationRef", {"name"}, {"kind"})


def check_trigger_authentication(doc: Doc) -> None:
    spec = fields(
        doc["spec"],
        "spec",
        {"secretTargetRef"},
        {"env", "configMapTargetRef", "podIdentity", "hashiCorpVault", "azureKeyVault"}
        | {"awsSecretManager", "gcpSecretManager", "boundServiceAccountToken"},
    )
    for ref in spec["secretTargetRef"]:
        fields(ref, "secretTargetRef", {"parameter", "name", "key"}, set())


def check_service_monitor(doc: Doc) -> None:
    spec = fields(
        doc["spec"],
        "spec",
        {"selector", "endpoints"},
        {"namespaceSelector", "jobLabel", "targetLabels", "podTargetLabels", "sampleLimit"},
    )
    assert spec["selector"].get("matchLabels"), "select by labels"
    for endpoint in spec["endpoints"]:
        fields(
            endpoint,
            "endpoint",
            {"port"},
            {"path", "interval", "scrapeTimeout", "scheme", "honorLabels", "relabelings"},
        )
        assert isinstance(endpoint["port"], str), "ServiceMonitor ports go by name"


MANIFESTS = [
    pytest.param(path, index, id=f"{path.relative_to(K8S)}:{ident(doc)}")
    for path in all_manifest_files()
    for index, doc in enumerate(load_docs(path))
]


@pytest.mark.parametrize(("path", "index"), MANIFESTS)
def test_manifest_is_valid(path: Path, index: int) -> None:
    validate(load_docs(path)[index])


def test_schema_validation_is_strict() -> None:
    """A misspelt field fails: the strict schemas allow no unknown properties."""
    [deployment] = [d for d in file_docs() if ident(d) == "Deployment/receiver"]
    broken = json.loads(json.dumps(deployment))
    container = pod_spec(broken)["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(AssertionError, match="readinesProbe"):
        validate(broken)


@pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_kustomize_build_is_valid(directory: Path) -> None:
    docs = rendered(directory)
    assert docs
    for doc in docs:
        validate(doc)
    if directory == BASE:
        return
    namespace = kustomization(directory)["namespace"]
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, ident(doc)
    image = kustomization(directory)["images"][0]
    expected = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for deployment in named(docs, "Deployment").values():
        for container in pod_spec(deployment)["containers"]:
            assert container["image"] == expected, ident(deployment)


# ------------------------------------------------------------ Kubernetes: the policies


def check_policies(docs: list[Doc]) -> None:
    deployments = named(docs, "Deployment")
    assert deployments
    roles = [role(pod_spec(d)["containers"][0]) for d in deployments.values()]
    receivers = [r for r in roles if r == "receiver"]
    assert len(receivers) == 1, "one receiver Deployment"
    for deployment in deployments.values():
        check_pod(deployment)
        kind = role(pod_spec(deployment)["containers"][0])
        assert kind in ("receiver", "worker", "console"), f"{ident(deployment)}: {kind}"
        if kind == "receiver":
            check_receiver(docs, deployment)
        elif kind == "console":
            check_console(docs, deployment)
        else:
            check_worker(docs, deployment)


def check_pod(deployment: Doc) -> None:
    name = ident(deployment)
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(deployment)), name
    spec = pod_spec(deployment)
    assert spec.get("automountServiceAccountToken") is False, name
    pod_security = spec.get("securityContext", {})
    assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
    for container in spec["containers"]:
        where = f"{name} container {container['name']}"
        for probe in ("readinessProbe", "livenessProbe"):
            # The console listens on the pod's loopback only: its probes run inside.
            kinds = ("httpGet", "exec") if role(container) == "console" else ("httpGet",)
            assert any(container.get(probe, {}).get(k) for k in kinds), f"{where}: no {probe}"
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][part]), f"{where}: {part}"
        security = container.get("securityContext", {})
        non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
        assert non_root is True, f"{where}: runAsNonRoot"
        assert security.get("readOnlyRootFilesystem") is True, f"{where}: read-only root"
        assert security.get("allowPrivilegeEscalation") is False, f"{where}: escalation"
        assert security.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: caps"
        tmp, _ = volume_for(spec, container, TMP)
        assert "emptyDir" in tmp, f"{where}: /tmp is not an emptyDir"
        image_uid = int(next(i.args for i in final_stage() if i.keyword == "USER").split(":")[0])
        assert security.get("runAsUser", pod_security.get("runAsUser")) == image_uid, where


def check_console(docs: list[Doc], deployment: Doc) -> None:
    """One pod on its loopback, no Service or Ingress to it, its secrets from files."""
    name = ident(deployment)
    container = pod_spec(deployment)["containers"][0]
    env = container_env(container)
    assert env.get("CONSOLE_HOST", "127.0.0.1") == "127.0.0.1", f"{name}: loopback only"
    assert deployment["spec"].get("replicas", 1) == 1, name
    labels = pod_labels(deployment)
    for service in named(docs, "Service").values():
        assert not selects(service["spec"].get("selector", {}), labels), f"{name}: a Service"
    check_secret_files(
        docs, deployment, ("AMQP_URL_FILE", "CONSOLE_PASSWORD_FILE", "RABBITMQ_MANAGEMENT_URL_FILE")
    )


def check_secret_files(docs: list[Doc], deployment: Doc, variables: tuple[str, ...]) -> None:
    """Each *_FILE variable names a file of a mounted Secret that holds that key."""
    spec = pod_spec(deployment)
    container = spec["containers"][0]
    env = container_env(container)
    for variable in variables:
        path = env.get(variable)
        assert path, f"{ident(deployment)}: {variable} is not set"
        assert variable.removesuffix("_FILE") not in env, f"{ident(deployment)}: both forms"
        volume, relative = volume_for(spec, container, path)
        if named(docs, "Secret"):
            secret_value(docs, volume, relative)
        else:
            assert "secret" in volume, f"{variable} is not read from a Secret"


def check_receiver(docs: list[Doc], deployment: Doc) -> None:
    name = ident(deployment)
    spec = pod_spec(deployment)
    container = spec["containers"][0]
    env = container_env(container)
    port = int(env.get("PORT") or 8080)
    assert port == 8080
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert ready["path"] == "/readyz", name
    assert port_number(container, ready["port"]) == port, name
    assert live["path"] == "/healthz", name
    assert port_number(container, live["port"]) == port, name

    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert Path(pre_stop[0]).name == "sleep", f"{name}: preStop sleeps"
    assert len(pre_stop) == 2, name
    assert "SHUTDOWN_GRACE" in env, f"{name}: set SHUTDOWN_GRACE for the load balancer"
    needed = (
        float(pre_stop[1])
        + float(env["SHUTDOWN_GRACE"] or 0)
        + float(env.get("PUBLISH_TIMEOUT") or Settings.publish_timeout)
        + RECEIVER_DRAIN_SLACK
    )
    assert spec["terminationGracePeriodSeconds"] > needed, name

    spool, _ = volume_for(spec, container, str(env["SPOOL_DIR"]))
    # A Deployment's pods share any claim they name: the spool must be per pod.
    assert "emptyDir" in spool, f"{name}: SPOOL_DIR on a volume replicas would share"
    check_secret_files(
        docs, deployment, ("AMQP_URL_FILE", "WEBHOOK_API_KEYS_FILE", "WEBHOOK_SHARED_SECRETS_FILE")
    )

    labels = pod_labels(deployment)
    hpas = [
        h
        for h in named(docs, "HorizontalPodAutoscaler").values()
        if h["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    ]
    assert len(hpas) == 1, f"{name}: one HorizontalPodAutoscaler"
    hpa = hpas[0]["spec"]
    assert hpa["minReplicas"] >= 2
    assert hpa["maxReplicas"] > hpa["minReplicas"]
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    replicas = deployment["spec"].get("replicas")
    assert replicas is None or replicas >= 2, f"{name}: at least 2 replicas"
    pdbs = named(docs, "PodDisruptionBudget").values()
    assert any(selects(p["spec"]["selector"]["matchLabels"], labels) for p in pdbs), name

    services = [
        s for s in named(docs, "Service").values() if selects(s["spec"]["selector"], labels)
    ]
    assert len(services) == 1, f"{name}: one Service"
    service = services[0]
    [http] = service["spec"]["ports"]
    assert port_number(container, http["targetPort"]) == port
    ingresses = list(named(docs, "Ingress").values())
    assert len(ingresses) == 1
    ingress = ingresses[0]["spec"]
    tls_hosts = {host for tls in ingress["tls"] for host in tls["hosts"]}
    for rule in ingress["rules"]:
        assert rule["host"] in tls_hosts, f"{rule['host']} without TLS"
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"].get("name", http["name"]) == http["name"]
            assert path["path"] == "/webhooks/avionte", "only the webhook path is public"
    assert env.get("TRUSTED_PROXIES"), "TLS ends at the ingress: trust its X-Forwarded-For"
    check_scraped(docs, deployment, port)


def check_worker(docs: list[Doc], deployment: Doc) -> None:
    name = ident(deployment)
    spec = pod_spec(deployment)
    container = spec["containers"][0]
    env = container_env(container)
    metrics_port = int(env.get("METRICS_PORT") or 9100)
    live = container["livenessProbe"]["httpGet"]
    assert live["path"] == "/healthz", name
    assert port_number(container, live["port"]) == metrics_port, name
    modules = consumer_modules(container["command"])
    timeout = float(env.get("SHUTDOWN_TIMEOUT") or WorkerSettings.shutdown_timeout)
    assert "SHUTDOWN_TIMEOUT" in env, f"{name}: set SHUTDOWN_TIMEOUT"
    steps = (2 * len(modules) + 1) * WORKER_BROKER_STEP
    assert spec["terminationGracePeriodSeconds"] > timeout + steps, name
    files = tuple(variable for variable in env if variable.endswith("_FILE"))
    assert "AMQP_URL_FILE" in files, f"{name}: AMQP_URL_FILE is not set"
    check_secret_files(docs, deployment, files)

    # One consumer per Deployment, named like it; its queue is {BUS_PREFIX}.{name}.
    assert len(modules) == 1, f"{name}: one consumer per Deployment, scaled on its queue"
    consumer = deployment["metadata"]["name"]
    queue = f"{env.get('BUS_PREFIX') or DEFAULT_BUS_PREFIX}.{consumer}"
    scaled = [
        s
        for s in named(docs, "ScaledObject").values()
        if s["spec"]["scaleTargetRef"]["name"] == consumer
    ]
    assert len(scaled) == 1, f"{name}: one ScaledObject"
    triggers = scaled[0]["spec"]["triggers"]
    rabbit = [t for t in triggers if t["type"] == "rabbitmq"]
    assert len(rabbit) == 1, f"{name}: one rabbitmq trigger"
    metadata = rabbit[0]["metadata"]
    assert metadata["queueName"] == queue, f"{name}: the trigger watches {metadata['queueName']}"
    assert metadata["mode"] == "QueueLength"
    assert int(metadata["value"]) > 0
    assert "replicas" not in deployment["spec"], f"{name}: KEDA owns the replica count"
    auth_name = rabbit[0]["authenticationRef"]["name"]
    auths = named(docs, "TriggerAuthentication")
    assert auth_name in auths, f"{name}: no TriggerAuthentication {auth_name}"
    [ref] = [r for r in auths[auth_name]["spec"]["secretTargetRef"] if r["parameter"] == "host"]
    # KEDA reads the queue with the same URL the workers use.
    amqp_volume, amqp_file = volume_for(spec, container, str(env["AMQP_URL_FILE"]))
    items = {i["path"]: i["key"] for i in amqp_volume["secret"].get("items", [])}
    assert ref["name"] == amqp_volume["secret"]["secretName"]
    assert ref["key"] == items.get(amqp_file, amqp_file)

    if "audit_log" in modules:
        log_dir = str(env["AUDIT_LOG_DIR"])
        volume, _ = volume_for(spec, container, log_dir.split("$(")[0].rstrip("/"))
        assert "persistentVolumeClaim" in volume, f"{name}: the audit log must outlive the pod"
        claims = named(docs, "PersistentVolumeClaim")
        claim = claims[volume["persistentVolumeClaim"]["claimName"]]
        if "ReadWriteMany" not in claim["spec"]["accessModes"]:
            pytest.fail(f"{name}: replicas on several nodes need a ReadWriteMany claim")
        assert "$(POD_NAME)" in log_dir, f"{name}: one directory per pod on a shared volume"
    check_scraped(docs, deployment, metrics_port)


def check_scraped(docs: list[Doc], deployment: Doc, port: int) -> None:
    """/metrics on `port` is scraped: by annotations and by a ServiceMonitor."""
    name = ident(deployment)
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/scrape") == "true", name
    assert annotations.get("prometheus.io/port") == str(port), name
    assert annotations.get("prometheus.io/path") == "/metrics", name
    container = pod_spec(deployment)["containers"][0]
    labels = pod_labels(deployment)
    for monitor in named(docs, "ServiceMonitor").values():
        spec = monitor["spec"]
        for service in named(docs, "Service").values():
            if not selects(spec["selector"]["matchLabels"], service["metadata"]["labels"]):
                continue
            if not selects(service["spec"]["selector"], labels):
                continue
            for endpoint in spec["endpoints"]:
                [svc_port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
                if port_number(container, svc_port["targetPort"]) == port:
                    assert endpoint.get("path", "/metrics") == "/metrics"
                    return
    raise AssertionError(f"{name}: no ServiceMonitor scrapes port {port}")


def test_policies_hold_in_the_files() -> None:
    check_policies(file_docs())


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_policies_hold_after_kustomize(overlay: Path) -> None:
    check_policies(rendered(overlay))


def test_kubernetes_settings_are_accepted(tmp_path: Path) -> None:
    """The env of every Deployment, with the Secret files it names, passes start-up."""
    docs = rendered(OVERLAYS[0]) if kustomize_command() else file_docs()
    for deployment in named(docs, "Deployment").values():
        spec = pod_spec(deployment)
        container = spec["containers"][0]
        env = {k: v for k, v in container_env(container).items() if v is not None}
        files: dict[str, str] = {}
        for variable, path in list(env.items()):
            if variable.endswith("_FILE"):
                volume, relative = volume_for(spec, container, path)
                files[variable] = secret_value(docs, volume, relative)
                copy = tmp_path / deployment["metadata"]["name"] / variable
                copy.parent.mkdir(exist_ok=True)
                copy.write_text(files[variable] + "\n", encoding="utf-8")
                env[variable] = str(copy)
        if kustomize_command() and role(container) in ("receiver", "worker"):
            # The example overlay takes the tracing component: these pods export traces.
            assert tracing.enabled(env), f"{ident(deployment)}: tracing is off"
        if role(container) == "receiver":
            receiver = Settings.from_env(env)
            assert receiver.amqp_url.value == files["AMQP_URL_FILE"]
            assert [k.value for k in receiver.api_keys] == [files["WEBHOOK_API_KEYS_FILE"]]
            secrets = [k.value for k in receiver.shared_secrets]
            assert secrets == [files["WEBHOOK_SHARED_SECRETS_FILE"]]
            assert receiver.spool_dir is not None, "the spool is on"
        elif role(container) == "console":
            console = ConsoleSettings.from_env(env, WorkerSettings.from_env(env))
            assert console.password.value == files["CONSOLE_PASSWORD_FILE"]
            assert console.management_url.value == files["RABBITMQ_MANAGEMENT_URL_FILE"]
            assert (console.host, console.port) == ("127.0.0.1", 8090)
        else:
            worker = WorkerSettings.from_env(env)
            assert worker.amqp_url.value == files["AMQP_URL_FILE"]


def test_overlay_secret_holds_placeholders_only() -> None:
    for overlay in OVERLAYS:
        for path in resource_files(overlay):
            for doc in load_docs(path):
                if doc["kind"] == "Secret":
                    assert "data" not in doc, "stringData, so placeholders stay readable"
                    for key, value in doc["stringData"].items():
                        assert "change-me" in value, f"{path.name}: {key} is not a placeholder"


# ------------------------------------------------------ the image, without an engine


@dataclass(frozen=True)
class ImageVenv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def env(self, **extra: str) -> dict[str, str]:
        """The image's environment: its ENV, with the venv first on PATH."""
        env = {
            "PATH": f"{self.root / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.root.parent),
        }
        env.update({k: v for k, v in image_env().items() if k != "PATH"})
        env.update(extra)
        return env

    def run(self, command: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
        assert command[0] == "python", command
        return subprocess.run(
            [str(self.python), *command[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=self.root.parent,
            env=self.env(**extra),
        )


def build_context_copy(destination: Path) -> None:
    """Copy what the builder stage COPYs from the repository root, nothing else."""
    for instruction in builder_stage():
        if instruction.keyword != "COPY":
            continue
        *sources, target = instruction.args.split()
        assert not target.startswith("/"), "COPY relative to the builder's WORKDIR"
        for source in sources:
            origin = ROOT / source
            into = destination / target / source if target.endswith("/") else destination / target
            if origin.is_dir():
                shutil.copytree(origin, into, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, into)


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> ImageVenv:
    """The builder stage's RUN lines, with /opt/venv moved into a temporary directory.

    pip's own cache is kept, so that this takes seconds rather than a download.
    """
    work = tmp_path_factory.mktemp("image")
    source = work / "src"
    source.mkdir()
    build_context_copy(source)
    venv = work / "venv"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    for instruction in builder_stage():
        if instruction.keyword == "RUN":
            command = instruction.args.replace("/opt/venv", str(venv))
            result = subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=source,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return ImageVenv(venv)


@dataclass(frozen=True)
class Deployed:
    where: str
    name: str
    command: list[str]
    env: dict[str, str]


def deployed_commands() -> Iterator[Deployed]:
    """Every command the image runs: its CMD, compose's services and the Deployments.

    A worker's compose service or Deployment is named after the consumer it runs.
    """
    [cmd] = [i for i in final_stage() if i.keyword == "CMD"]
    yield Deployed("Dockerfile CMD", "receiver", cmd.exec_form(), {})
    services = interpolate(compose(), env_example())["services"]
    for name, service in services.items():
        if "build" in service:
            yield Deployed(f"compose {name}", name, service["command"], compose_env(service))
    for deployment in named(file_docs(), "Deployment").values():
        container = pod_spec(deployment)["containers"][0]
        env = {k: v for k, v in container_env(container).items() if v is not None}
        name = deployment["metadata"]["name"]
        yield Deployed(ident(deployment), name, container["command"], env)


@pytest.mark.timeout(300)
def test_image_is_installed_from_the_copied_files(image_venv: ImageVenv) -> None:
    result = image_venv.run(["python", "-c", "import service, consumers; print(service.__file__)"])
    assert result.returncode == 0, result.stderr
    assert str(image_venv.root) in result.stdout, "imported from the venv, not the repository"
    result = image_venv.run(["python", "-m", "consumers", "list"])
    assert result.returncode == 0, result.stderr
    assert "audit-log" in result.stdout
    assert "placement-sync" in result.stdout


@pytest.mark.timeout(300)
def test_deployed_commands_run_in_the_image(image_venv: ImageVenv) -> None:
    deployed = list(deployed_commands())
    assert len(deployed) >= 1 + 3 + 3
    for item in deployed:
        where = item.where
        if item.command == ["python", "-m", "service"]:
            result = image_venv.run([*item.command, "--help"])
            assert result.returncode == 0, f"{where}: {result.stderr}"
            assert "usage: python -m service" in result.stdout
            continue
        if item.command == ["python", "-m", "consumers", "console"]:
            result = image_venv.run([*item.command, "--help"])
            assert result.returncode == 0, f"{where}: {result.stderr}"
            # Its pages and static files were installed with the package.
            listed = "print(sorted(p.name for p in HERE.glob('*/*')))"
            check = f"from consumers.console.pages import HERE; {listed}"
            result = image_venv.run(["python", "-c", check])
            assert "base.html" in result.stdout, f"{where}: {result.stdout} {result.stderr}"
            assert "console.js" in result.stdout, f"{where}: {result.stdout}"
            continue
        # The modules load, and define the consumer the deployment is named after, whose
        # queue is the one its ScaledObject watches (checked above).
        modules = consumer_modules(item.command)
        assert modules, f"{where}: {item.command}"
        bus = {k: v for k, v in item.env.items() if k == "BUS_PREFIX"}
        result = image_venv.run(["python", "-m", "consumers", "list", *modules], **bus)
        assert result.returncode == 0, f"{where}: {result.stderr}"
        queues = re.findall(r"^(\S+)\s+\(.*?\)\s+queue (\S+)", result.stdout, re.MULTILINE)
        prefix = item.env.get("BUS_PREFIX") or DEFAULT_BUS_PREFIX
        assert queues == [(item.name, f"{prefix}.{item.name}")], f"{where}: {result.stdout}"
        result = image_venv.run([*item.command, "--help"])
        assert result.returncode == 0, f"{where}: {result.stderr}"


@contextlib.contextmanager
def serving(image: ImageVenv, command: list[str], port: int, **env: str) -> Iterator[None]:
    """Run `command` from the image until its /healthz on `port` answers; SIGTERM after.

    The broker address is a closed port: health must not depend on the broker.
    """
    dead_broker = free_port()
    process = subprocess.Popen(
        [str(image.python), *command[1:]],
        cwd=image.root.parent,
        env=image.env(AMQP_URL=f"amqp://guest:guest@127.0.0.1:{dead_broker}/", **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None, f"{command} exited"
                assert time.monotonic() < deadline, f"{command} did not come up"
                time.sleep(0.1)
        yield
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, "a clean exit on SIGTERM"
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate(timeout=10)[0]
        if process.returncode != 0:
            print(output)


def run_check(image: ImageVenv, check: list[str], default_port: int, port: int) -> None:
    """Run a health check command as written, but against `port`."""
    if check[0] == "CMD":
        check = check[1:]
    local = [part.replace(f"127.0.0.1:{default_port}", f"127.0.0.1:{port}") for part in check]
    result = image.run(local)
    assert result.returncode == 0, result.stderr


@pytest.mark.timeout(300)
def test_receiver_health_checks_pass(image_venv: ImageVenv, tmp_path: Path) -> None:
    """The image's and compose's checks pass; with the spool on, it is ready sans broker."""
    port = free_port()
    command = ["python", "-m", "service"]
    spool = str(tmp_path / "spool")
    env = {"PORT": str(port), "HOST": "127.0.0.1", "SPOOL_DIR": spool}
    with serving(image_venv, command, port, WEBHOOK_API_KEYS="change-me-api-key", **env):
        run_check(image_venv, healthcheck_command(), 8080, port)
        run_check(image_venv, compose()["services"]["receiver"]["healthcheck"]["test"], 8080, port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            assert answer.status == 200
            assert json.load(answer)["spool"] is not None


@pytest.mark.timeout(300)
def test_worker_health_check_passes(image_venv: ImageVenv) -> None:
    """A worker serves /healthz on METRICS_PORT, where compose and the probes look."""
    port = free_port()
    worker = compose()["services"]["placement-sync"]
    default = int(compose_env(worker)["METRICS_PORT"])
    with serving(image_venv, worker["command"], port, METRICS_PORT=str(port)):
        run_check(image_venv, worker["healthcheck"]["test"], default, port)
