"""The Kubernetes manifests against the Kubernetes schemas and the operators' fields."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from tests.deploy.manifests import (
    BASE,
    COMPONENTS,
    K8S,
    OVERLAYS,
    Doc,
    all_manifest_files,
    alone_on_the_base,
    file_docs,
    ident,
    kustomization,
    load_docs,
    named,
    pod_spec,
    rendered,
    resource_files,
)

# The oldest Kubernetes the manifests are meant for, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
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
        ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheus_rule,
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


# The Prometheus Operator's Duration: units from years to milliseconds, largest first.
DURATION = re.compile(r"0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?")


def check_duration(value: Any, where: str) -> None:
    assert isinstance(value, str), f"{where}: a duration is a string"
    assert value, f"{where}: an empty duration"
    assert DURATION.fullmatch(value), f"{where}: {value!r} is not a duration"


def check_prometheus_rule(doc: Doc) -> None:
    """The PrometheusRule CRD's fields: groups of alerting or recording rules."""
    spec = fields(doc["spec"], "spec", {"groups"}, set())
    names = [group.get("name") for group in spec["groups"]]
    assert len(names) == len(set(names)), "group names are unique"
    for group in spec["groups"]:
        where = f"group {group.get('name')}"
        fields(
            group,
            where,
            {"name", "rules"},
            {"interval", "query_offset", "limit", "partial_response_strategy", "labels"},
        )
        assert isinstance(group["name"], str), where
        assert group["name"], where
        if "interval" in group:
            check_duration(group["interval"], where)
        assert group["rules"], f"{where}: no rules"
        for rule in group["rules"]:
            kind = "alert" if "alert" in rule else "record"
            name = rule.get(kind)
            place = f"{where} {kind} {name}"
            optional = {"for", "keep_firing_for", "annotations"} if kind == "alert" else set()
            fields(rule, place, {kind, "expr"}, {"labels", *optional})
            assert isinstance(name, str), place
            assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name), place
            assert isinstance(rule["expr"], str), place
            assert rule["expr"].strip(), place
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    check_duration(rule[key], f"{place} {key}")
            for key in ("labels", "annotations"):
                assert all(isinstance(v, str) for v in rule.get(key, {}).values()), place


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


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda p: p.name)
def test_component_alone_on_the_base_is_valid(component: Path, tmp_path: Path) -> None:
    """Each component renders, and validates, with the base and no other component."""
    docs = rendered(alone_on_the_base(component, tmp_path))
    base = {ident(doc) for doc in rendered(BASE)}
    for doc in docs:
        validate(doc)
    own = {ident(doc) for path in resource_files(component) for doc in load_docs(path)}
    assert {ident(doc) for doc in docs} == base | own | {"Secret/relay-secrets"}
