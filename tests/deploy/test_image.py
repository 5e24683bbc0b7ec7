"""The image without an engine: a venv built as the Dockerfile does runs every deployed command."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.manifests import (
    DEFAULT_BUS_PREFIX,
    builder_stage,
    compose,
    compose_env,
    consumer_modules,
    container_env,
    env_example,
    file_docs,
    final_stage,
    healthcheck_command,
    ident,
    image_env,
    interpolate,
    named,
    pod_spec,
)
from tests.receivers import ROOT, free_port


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
