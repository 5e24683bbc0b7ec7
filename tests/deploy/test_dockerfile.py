"""The Dockerfile: two slim stages, an unprivileged final image, its command and check."""

from __future__ import annotations

from tests.deploy.manifests import (
    COMPOSE,
    builder_stage,
    dockerfile,
    final_stage,
    healthcheck_command,
    image_env,
    load_docs,
)


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
