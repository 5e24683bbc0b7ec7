"""The Kubernetes policies: pod security, probes, scaling, secrets from files, scraping."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from yarl import URL

from consumers.console.settings import ConsoleSettings, receiver_urls
from consumers.history.settings import HistorySettings
from consumers.settings import WorkerSettings
from service.observability import tracing
from service.settings import Settings
from tests.deploy.manifests import (
    COMPONENTS,
    DEFAULT_BUS_PREFIX,
    OVERLAYS,
    RECEIVER_DRAIN_SLACK,
    TMP,
    WORKER_BROKER_STEP,
    Doc,
    alone_on_the_base,
    consumer_modules,
    container_env,
    file_docs,
    final_stage,
    ident,
    kustomize_command,
    load_docs,
    named,
    pod_spec,
    rendered,
    resource_files,
)


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def pod_labels(deployment: Doc) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


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


def main_container(deployment: Doc) -> tuple[Doc, Doc, dict[str, str | None]]:
    """The pod spec, its first container and that container's env."""
    spec = pod_spec(deployment)
    container: Doc = spec["containers"][0]
    return spec, container, container_env(container)


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
    needed = ("AMQP_URL_FILE", "CONSOLE_PASSWORD_FILE", "RABBITMQ_MANAGEMENT_URL_FILE")
    files = tuple(variable for variable in env if variable.endswith("_FILE"))
    assert set(needed) <= set(files), f"{name}: {sorted(set(needed) - set(files))} not set"
    check_secret_files(docs, deployment, files)
    check_console_receivers(docs, deployment)


def check_console_receivers(docs: list[Doc], console: Doc) -> None:
    """CONSOLE_RECEIVERS names the receiver's Service by its in-cluster name and port."""
    name = ident(console)
    raw = main_container(console)[2].get("CONSOLE_RECEIVERS")
    assert raw, f"{name}: CONSOLE_RECEIVERS is not set"
    services = named(docs, "Service")
    receivers = [
        d for d in named(docs, "Deployment").values() if role(main_container(d)[1]) == "receiver"
    ]
    watched = set()
    for url in map(URL, receiver_urls(raw)):
        assert url.scheme == "http", f"{name}: {url}"
        assert url.path in ("", "/"), f"{name}: {url} is a base URL, the console adds /readyz"
        assert url.host in services, f"{name}: {url} names no Service"
        service = services[str(url.host)]
        ports = [p for p in service["spec"]["ports"] if p["port"] == url.port]
        assert ports, f"{name}: {url}: the Service {url.host} has no port {url.port}"
        [port] = ports
        for deployment in receivers:
            if selects(service["spec"]["selector"], pod_labels(deployment)):
                container = main_container(deployment)[1]
                assert port_number(container, port["targetPort"]) == port_number(
                    container, container["readinessProbe"]["httpGet"]["port"]
                ), f"{name}: {url} does not reach the port of /readyz"
                watched.add(deployment["metadata"]["name"])
    assert watched == {d["metadata"]["name"] for d in receivers}, f"{name}: a receiver unwatched"


def check_secret_files(docs: list[Doc], deployment: Doc, variables: tuple[str, ...]) -> None:
    """Each *_FILE variable names a file of a mounted Secret that holds that key."""
    spec, container, env = main_container(deployment)
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
    spec, container, env = main_container(deployment)
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
    spec, container, env = main_container(deployment)
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

    if "history" in modules:
        # Without the URL the history refuses to start (exit 2).
        assert "HISTORY_DATABASE_URL_FILE" in files, f"{name}: HISTORY_DATABASE_URL_FILE"
        # It serves /healthz once its database is open, which it waits for: the kubelet
        # must not kill it before it gives up by itself.
        waits = float(env.get("HISTORY_START_TIMEOUT") or HistorySettings.start_timeout)
        assert probe_patience(container) > waits, f"{name}: killed while it waits to start"
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


def probe_patience(container: Doc) -> float:
    """Seconds from the container's start until the kubelet would kill it for not serving."""
    probe = container.get("startupProbe") or container["livenessProbe"]
    attempts = probe.get("failureThreshold", 3) * probe.get("periodSeconds", 10)
    return float(probe.get("initialDelaySeconds", 0) + attempts)


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


def secret_key(deployment: Doc, variable: str) -> tuple[str, str]:
    """The Secret and key the file a *_FILE variable names comes from."""
    spec, container, env = main_container(deployment)
    volume, relative = volume_for(spec, container, str(env[variable]))
    source = volume["secret"]
    items = {item["path"]: item["key"] for item in source.get("items", [])}
    return source["secretName"], items.get(relative, relative)


def check_history(docs: list[Doc]) -> None:
    """Where the history runs, the console reads the same database for its History page."""
    deployments = named(docs, "Deployment")
    writers = [
        d
        for d in deployments.values()
        if "history" in consumer_modules(pod_spec(d)["containers"][0]["command"])
    ]
    consoles = [d for d in deployments.values() if role(pod_spec(d)["containers"][0]) == "console"]
    for console in consoles:
        _, _, env = main_container(console)
        if not writers:
            assert "HISTORY_DATABASE_URL_FILE" not in env, "a History page without a history"
            continue
        assert "HISTORY_DATABASE_URL_FILE" in env, f"{ident(console)}: no History page"
        for writer in writers:
            where = secret_key(writer, "HISTORY_DATABASE_URL_FILE")
            assert secret_key(console, "HISTORY_DATABASE_URL_FILE") == where, ident(console)


def test_policies_hold_in_the_files() -> None:
    check_policies(file_docs())


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_policies_hold_after_kustomize(overlay: Path) -> None:
    docs = rendered(overlay)
    check_policies(docs)
    check_history(docs)


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda p: p.name)
def test_policies_hold_with_each_component_alone(component: Path, tmp_path: Path) -> None:
    """A component needs no other: on the base alone, every policy still holds."""
    docs = rendered(alone_on_the_base(component, tmp_path))
    check_policies(docs)
    check_history(docs)


def test_example_overlay_runs_the_history() -> None:
    """The example takes the history component, and traces its pods like the others."""
    docs = rendered(OVERLAYS[0])
    history = named(docs, "Deployment")["history"]
    assert role(pod_spec(history)["containers"][0]) == "worker"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in main_container(history)[2], "tracing comes after"
    assert secret_key(history, "HISTORY_DATABASE_URL_FILE") == (
        "relay-secrets",
        "history-database-url",
    )


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
            assert console.receivers == (env["CONSOLE_RECEIVERS"],)
        else:
            worker = WorkerSettings.from_env(env)
            assert worker.amqp_url.value == files["AMQP_URL_FILE"]
        if "HISTORY_DATABASE_URL_FILE" in env or "history" in consumer_modules(
            container["command"]
        ):
            # The History page reads the history as its writer does.
            history = HistorySettings.from_env(env)
            assert history.database_url.value == files["HISTORY_DATABASE_URL_FILE"]


def test_overlay_secret_holds_placeholders_only() -> None:
    for overlay in OVERLAYS:
        for path in resource_files(overlay):
            for doc in load_docs(path):
                if doc["kind"] == "Secret":
                    assert "data" not in doc, "stringData, so placeholders stay readable"
                    for key, value in doc["stringData"].items():
                        assert "change-me" in value, f"{path.name}: {key} is not a placeholder"
