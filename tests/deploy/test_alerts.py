"""The PrometheusRule alerts.yaml: the manual's alerts, letter for letter, in sound PromQL."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumers.runtime.metrics import WorkerMetrics
from service.observability.metrics import ReceiverMetrics
from tests.deploy.manifests import BASE, Doc, load_docs, rendered
from tests.deploy.promql import problems
from tests.deploy.test_kubernetes_schema import validate
from tests.receivers import ROOT

ALERTS = BASE / "alerts.yaml"
DOCS = ROOT / "docs"
MANUAL = DOCS / "operating" / "metrics.md"
REFERENCE = DOCS / "reference" / "metrics.md"
SEVERITIES = ("critical", "warning", "info")
# RabbitMQ's per-queue series (rabbitmq_prometheus with return_per_object_metrics).
RABBITMQ_SERIES = {
    name: {"vhost", "queue"}
    for name in (
        "rabbitmq_queue_messages",
        "rabbitmq_queue_messages_ready",
        "rabbitmq_queue_messages_unacked",
    )
}


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str
    expr: str
    duration: str | None


def normalized(expr: str) -> str:
    return " ".join(expr.split())


def manual_alerts() -> list[Alert]:
    """The manual's list: a comment naming the alert and its severity, then its PromQL."""
    section = MANUAL.read_text(encoding="utf-8").split("## Alerts to set", 1)[1]
    found = re.search(r"```promql\n(.*?)```", section, re.DOTALL)
    assert found, "no promql block under 'Alerts to set'"
    alerts = []
    for entry in re.split(r"\n\s*\n", found.group(1).strip()):
        lines = entry.splitlines()
        head = re.fullmatch(r"# (\w+) \((\w+)\)\. \S.*", lines[0])
        assert head, f"an alert's first line names it and its severity: {lines[0]!r}"
        comments = [line for line in lines if line.startswith("#")]
        assert lines[: len(comments)] == comments, f"{head[1]}: comments come first"
        expr = "\n".join(lines[len(comments) :])
        duration = re.search(r"\s+# for: (\S+)$", expr)
        if duration:
            expr = expr[: duration.start()]
        assert "#" not in expr, f"{head[1]}: a comment inside the expression"
        alerts.append(Alert(head[1], head[2], normalized(expr), duration[1] if duration else None))
    return alerts


def rules(docs: list[Doc]) -> list[Doc]:
    return [
        rule
        for doc in docs
        if doc["kind"] == "PrometheusRule"
        for group in doc["spec"]["groups"]
        for rule in group["rules"]
    ]


def as_alert(rule: Doc) -> Alert:
    labels = rule.get("labels", {})
    return Alert(rule["alert"], labels.get("severity"), normalized(rule["expr"]), rule.get("for"))


def known_series() -> dict[str, set[str]]:
    """Each series the reference documents and the code exports, with its labels."""
    exported: set[str] = set()
    for metrics in (ReceiverMetrics(), WorkerMetrics()):
        for family in metrics.registry.collect():
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
            exported.update(family.name + s for s in suffixes.get(family.type, [""]))
    series = dict(RABBITMQ_SERIES)
    table = REFERENCE.read_text(encoding="utf-8")
    for names, kind, labels in re.findall(r"^\| (`relay_[^|]*) \| (\w+) \|([^|]*)\|", table, re.M):
        # A label's values may follow it in parentheses: `stored` (`broker`, `spool`).
        label_set = set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", labels)))
        for name in re.findall(r"`(\w+)`", names):
            if kind == "histogram":
                series |= {f"{name}_bucket": label_set | {"le"}}
                series |= {f"{name}_{part}": label_set for part in ("count", "sum")}
            else:
                series[name] = label_set
    return {
        name: labels
        for name, labels in series.items()
        if name in exported or name in RABBITMQ_SERIES
    }


def test_the_rule_is_the_manuals_list() -> None:
    """Same names, severities, expressions and `for:` in the manual and in alerts.yaml."""
    manual = {alert.name: alert for alert in manual_alerts()}
    shipped = [as_alert(rule) for rule in rules(load_docs(ALERTS))]
    assert len(manual) == len(manual_alerts()), "an alert named twice in the manual"
    assert len({a.name for a in shipped}) == len(shipped), "an alert named twice in alerts.yaml"
    assert sorted(a.name for a in shipped) == sorted(manual)
    for alert in shipped:
        assert alert == manual[alert.name]


@pytest.mark.parametrize("rule", rules(load_docs(ALERTS)), ids=lambda rule: rule["alert"])
def test_each_alert_is_sound(rule: Doc) -> None:
    """Its PromQL reads, names documented and exported series, and it says what to do."""
    assert problems(rule["expr"], known_series()) == []
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    page, _, anchor = annotations["runbook"].partition("#")
    path = ROOT / page
    assert path.is_file(), f"{rule['alert']}: no page {page}"
    assert DOCS in path.parents, f"{rule['alert']}: the runbook is a page of the manual"
    if anchor:
        assert anchor in headings(path), f"{rule['alert']}: no section #{anchor} in {page}"
    assert runbook_table()[rule["alert"]] == annotations["runbook"], (
        f"{rule['alert']}: the manual's table names another page"
    )


def headings(page: Path) -> set[str]:
    """The anchors of a page's headings, as MkDocs makes them."""
    titles = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", t).strip().lower()) for t in titles}


def runbook_table() -> dict[str, str]:
    """The manual's "what to do" table: each alert it names, and its link from the root."""
    table: dict[str, str] = {}
    for alerts, cell in re.findall(r"^\| (`Relay[^|]*) \| ([^|]*) \|$", MANUAL.read_text(), re.M):
        link = re.search(r"\]\(([^)]+)\)", cell)
        assert link, f"no link for {alerts}"
        page, _, anchor = link[1].partition("#")
        path = (MANUAL.parent / page).resolve() if page else MANUAL
        target = path.relative_to(ROOT).as_posix() + (f"#{anchor}" if anchor else "")
        table.update(dict.fromkeys(re.findall(r"`(\w+)`", alerts), target))
    return table


def test_the_per_queue_series_are_exported() -> None:
    """The queue alerts need RabbitMQ's per-queue series, which are off by default."""
    [cluster] = [d for d in load_docs(BASE / "rabbitmq.yaml") if d["kind"] == "RabbitmqCluster"]
    config = cluster["spec"]["rabbitmq"]["additionalConfig"]
    assert re.search(r"^\s*prometheus\.return_per_object_metrics\s*=\s*true\s*$", config, re.M)


@pytest.mark.parametrize(
    ("expr", "said"),
    [
        ("sum(rate(relay_deliveries_total[5m]) > 0", "unclosed"),
        ("sum(rate(relay_deliveries_total[5m]))) > 0", "closes nothing"),
        ("sum(rate(relay_delivery_total[5m])) > 0", "unknown metric relay_delivery_total"),
        ('sum(rate(relay_deliveries_total{outcom="x"}[5m])) > 0', "no label outcom"),
        ("sum(rate(relay_deliveries_total)) > 0", "rate needs a range"),
        ("sum(rates(relay_deliveries_total[5m])) > 0", "unknown function rates"),
        ('max(relay_spool_records{x=~"(("}) > 0', "missing"),
        ("max(relay_spool_records[5x]) > 0", "not a duration"),
        ("max by (tenant) (relay_spool_records) > 0", "label tenant"),
        ("max(relay_spool_records)", "no comparison"),
        ('relay_spool_records{outcome="a" "b"} > 0', "where ',' or '}' belongs"),
        ('relay_spool_records{outcome>"a"} > 0', "matcher"),
    ],
)
def test_the_promql_check_finds_mistakes(expr: str, said: str) -> None:
    found = problems(expr, known_series())
    assert any(said in problem for problem in found), found


def manual_patch() -> list[Any]:
    """The manual's example patch of the silence thresholds."""
    blocks = re.findall(r"```yaml\n(.*?)```", MANUAL.read_text(encoding="utf-8"), re.DOTALL)
    [block] = [b for b in blocks if "kind: PrometheusRule" in b]
    patches: list[Any] = yaml.safe_load(block)["patches"]
    return patches


def test_the_manuals_tuning_patch_applies(tmp_path: Path) -> None:
    """The example applies to the base, changes what it says, and stays sound."""
    spec = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, tmp_path)],
        "patches": manual_patch(),
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    docs = rendered(tmp_path)
    [rule] = [doc for doc in docs if doc["kind"] == "PrometheusRule"]
    validate(rule)
    patched = rules([rule])
    before = {as_alert(r) for r in rules(rendered(BASE))}
    changed = [as_alert(r) for r in patched if as_alert(r) not in before]
    assert sorted(a.name for a in changed) == [
        "RelaySilent",
        "RelayTenantSilent",
        "RelayTenantSilent",
    ]
    assert len(patched) == len(before) + 1
    for alert in patched:
        assert problems(alert["expr"], known_series()) == [], alert["alert"]
    exprs = " ".join(a.expr for a in changed)
    assert "> 4 * 3600" in exprs
    assert 'tenant!~"unknown|other|12"' in exprs
    assert 'tenant="12"' in exprs
