"""The kustomizations: every manifest included, every entry and patch target present."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import (
    BASE,
    COMPONENTS,
    K8S,
    OVERLAYS,
    all_manifest_files,
    ident,
    included,
    kustomization,
    load_docs,
    resource_files,
)


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


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda p: p.name)
def test_component_patches_target_the_base(component: Path) -> None:
    """A patch whose target is missing is skipped without a word: each must hit the base."""
    spec = kustomization(component)
    assert spec["kind"] == "Component"
    docs = [doc for d in (BASE, component) for path in resource_files(d) for doc in load_docs(path)]
    for patch in spec.get("patches", []):
        target = patch["target"]
        hits = [
            doc
            for doc in docs
            if doc["kind"] == target["kind"]
            and doc["metadata"]["name"] == target.get("name", doc["metadata"]["name"])
            and matches_labels(doc, target.get("labelSelector", ""))
        ]
        assert hits, f"{component.name}: the patch target {target} matches nothing"


def matches_labels(doc: dict[str, Any], selector: str) -> bool:
    """Kustomize's labelSelector, in the forms the components use: k=v and k in (a,b)."""
    labels = doc["metadata"].get("labels", {})
    for requirement in filter(None, (part.strip() for part in split_selector(selector))):
        if " in " in requirement:
            key, _, values = requirement.partition(" in ")
            allowed = {v.strip() for v in values.strip().strip("()").split(",")}
            if labels.get(key.strip()) not in allowed:
                return False
        else:
            key, _, value = requirement.partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
    return True


def split_selector(selector: str) -> list[str]:
    """Split a selector at the commas between requirements, not those inside (...)."""
    parts: list[str] = []
    depth, current = 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]
