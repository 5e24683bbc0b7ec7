"""Operator policies on the test broker, set with `rabbitmqctl` as an operator would, and removed.

AMQP cannot set a policy. `rabbitmqctl` must reach the node behind TEST_AMQP_URL
(on the local node, as root or as the `rabbitmq` user); when it cannot, the test
fails with its message.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from yarl import URL

from tests.support import AMQP_URL


def _vhost() -> str:
    path = URL(AMQP_URL).path.lstrip("/")
    return path or "/"


def rabbitmqctl(*args: str) -> str:
    try:
        result = subprocess.run(
            ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError:
        pytest.fail("rabbitmqctl is not installed; this test sets a broker policy with it")
    if result.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def _applied(name: str, queue: str) -> bool:
    listing = rabbitmqctl(
        "list_queues", "-p", _vhost(), "--quiet", "--no-table-headers", "name", "policy"
    )
    return any(line.split("\t") == [queue, name] for line in listing.splitlines())


@contextlib.contextmanager
def policy(
    pattern: str, definition: dict[str, Any], *, apply_to: str = "queues", queue: str | None = None
) -> Iterator[str]:
    """A policy on queues matching `pattern` while the block runs; yields its name.

    With `queue`, the block starts only once the broker applies the policy to it.
    """
    name = f"test-{uuid.uuid4().hex[:12]}"
    rabbitmqctl(
        "set_policy",
        "-p",
        _vhost(),
        "--apply-to",
        apply_to,
        "--priority",
        "100",
        name,
        pattern,
        json.dumps(definition),
    )
    try:
        deadline = time.monotonic() + 15
        while queue is not None and not _applied(name, queue):
            if time.monotonic() > deadline:
                pytest.fail(f"policy {name} did not apply to {queue} within 15 s")
            time.sleep(0.2)
        yield name
    finally:
        rabbitmqctl("clear_policy", "-p", _vhost(), name)
