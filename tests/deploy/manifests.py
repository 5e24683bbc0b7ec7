"""Reading the deployment files: the Dockerfile, compose.yaml, env.example and Kubernetes."""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings
from tests.receivers import ROOT

DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "env.example"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
COMPONENTS = sorted(p.parent for p in (K8S / "components").glob("*/kustomization.yaml"))
DEFAULT_BUS_PREFIX = Settings.bus_prefix
# Each shutdown step of a worker that talks to the broker is bounded at this (the manual).
WORKER_BROKER_STEP = 5
# After SHUTDOWN_GRACE, the receiver waits this long past PUBLISH_TIMEOUT for publishes.
RECEIVER_DRAIN_SLACK = 5
# Every container gets an emptyDir here, the one writable place besides its volumes.
TMP = "/tmp"  # noqa: S108

Doc = dict[str, Any]


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


def all_manifest_files() -> list[Path]:
    files = {path for overlay in [BASE, *OVERLAYS] for path in resource_files(overlay)}
    return sorted(files)


def file_docs() -> list[Doc]:
    """The manifests as written: the base and every overlay's own files, unpatched."""
    return [doc for path in all_manifest_files() for doc in load_docs(path)]


def alone_on_the_base(component: Path, directory: Path) -> Path:
    """An overlay in `directory`: the base, the example Secret and `component`, no other."""
    [secret] = [
        path
        for path in resource_files(OVERLAYS[0])
        if any(doc["kind"] == "Secret" for doc in load_docs(path))
    ]
    (directory / "secret.yaml").write_text(secret.read_text(encoding="utf-8"), encoding="utf-8")
    spec = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, directory), "secret.yaml"],
        "components": [os.path.relpath(component, directory)],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return directory


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


def pod_spec(deployment: Doc) -> Doc:
    spec: Doc = deployment["spec"]["template"]["spec"]
    return spec


def container_env(container: Doc) -> dict[str, str | None]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


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


def env_example(*, optional: bool = False) -> dict[str, str]:
    """The settings env.example sets; with `optional`, also those it shows commented out."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if optional and re.fullmatch(r"#[A-Z][A-Z0-9_]*=\S*", line):
            line = line[1:]
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and ${VAR:+other}, nested too."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value
    text, end = _substitute(value, 0, env, inside=False)
    assert end == len(value), f"unbalanced braces in {value!r}"
    return text


def _substitute(text: str, start: int, env: Mapping[str, str], *, inside: bool) -> tuple[str, int]:
    """Expand `text` from `start`: to its end, or (`inside` a ${...}) to the closing brace."""
    out: list[str] = []
    index = start
    while index < len(text):
        char = text[index]
        if inside and char == "}":
            return "".join(out), index
        if text.startswith("$$", index):
            out.append("$")
            index += 2
        elif text.startswith("${", index):
            expanded, index = _braced(text, index + 2, env)
            out.append(expanded)
        else:
            out.append(char)
            index += 1
    assert not inside, f"no closing brace in {text!r}"
    return "".join(out), index


def _braced(text: str, start: int, env: Mapping[str, str]) -> tuple[str, int]:
    """One ${NAME[op argument]} from after its `${`; return its value and the index past `}`."""
    name = _NAME.match(text, start)
    assert name, f"no variable name at {text[start:]!r}"
    index = name.end()
    operator = next((op for op in _OPERATORS if text.startswith(op, index)), "")
    argument, index = _substitute(text, index + len(operator), env, inside=True)
    assert operator or not argument, f"unexpected {argument!r} after {name.group()}"
    current = env.get(name.group())
    unset = current is None or (operator.startswith(":") and current == "")
    if operator.endswith("?") and unset:
        raise AssertionError(f"{name.group()} is required ({argument}) but env.example lacks it")
    if operator.endswith("-") and unset:
        return argument, index + 1
    if operator.endswith("+"):
        return ("" if unset else argument), index + 1
    return current or "", index + 1


def compose() -> Doc:
    [doc] = load_docs(COMPOSE)
    return doc


def compose_env(service: Doc) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return {key: str(value) for key, value in env.items()}
