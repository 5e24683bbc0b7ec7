"""Property-based fuzzing of the real receiver process against the real broker.

Hypothesis generates methods, paths, header sets (missing, duplicated, huge,
non-ASCII, with injected line breaks) and bodies (random bytes, deep nesting, huge
numbers, invalid UTF-8, duplicate keys, `Resource` of every type). For each request:
no 5xx but a deliberate 503, the process stays up, an authenticated well-formed
delivery gets 200 or 503, and an unauthenticated one is never accepted. At the end
the bus holds exactly one message per 200, so nothing unauthenticated was published.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.http.app import WEBHOOK_PATH
from tests.receivers import ROOT, base_env, free_port
from tests.support import (
    AMQP_URL,
    API_KEYS,
    SHARED_SECRETS,
    fixture_bodies,
    open_bus,
    sign_base64,
    sign_hex,
)

pytestmark = pytest.mark.rabbit

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2000"))
MAX_BODY = 4096


@dataclass(frozen=True)
class Request:
    raw: bytes
    webhook: bool  # a POST to the webhook path
    credential: bool  # carries a valid credential
    clean: bool  # nothing else in it that the HTTP parser or the receiver may refuse
    fits: bool  # body within MAX_BODY_BYTES


SAFE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
NASTY = st.one_of(
    st.text(max_size=40),  # any unicode, surrogates excluded by the encoder below
    st.just("x" * 9000),
    st.builds(lambda a, b: f"{a}\r\n{b}", SAFE, SAFE),
    st.builds(lambda a, b: f"{a}\n{b}", SAFE, SAFE),
    st.builds(lambda a: f"{a}\x00", SAFE),
)


def _json_bodies() -> st.SearchStrategy[bytes]:
    resources = st.one_of(
        st.just('{"PlacementId": 86635}'),
        st.just("{not json"),
        st.just(""),
        st.integers(),
        st.floats(allow_nan=False),
        st.booleans(),
        st.none(),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(SAFE, st.integers(), max_size=3),
    )
    names = st.one_of(
        st.sampled_from(["placement_updated", "VMS_job_created", "AcmeTalentEvent", "!!!", ""]),
        st.text(max_size=30),
        st.integers(),
        st.none(),
    )
    event = st.builds(
        lambda name, resource, tenant: json.dumps(
            {
                "EventName": name,
                "Resource": resource,
                "FrontOfficeTenantId": tenant,
                "CorrelationId": str(uuid.uuid4()),
            }
        ).encode(),
        names,
        resources,
        st.one_of(st.integers(), st.text(max_size=5), st.none()),
    )
    return st.one_of(
        event,
        st.sampled_from(list(fixture_bodies().values())),
        st.binary(max_size=600),
        st.integers(1, 20_000).map(lambda depth: b"[" * depth + b"]" * depth),
        st.integers(30, 6000).map(
            lambda n: b'{"EventName": "talent_created", "Big": ' + b"9" * n + b"}"
        ),
        st.just(b'{"EventName": "talent_created", "EventName": "placement_updated"}'),
        st.just(b'{"EventName": "talent_\xff\xfe_created"}'),
        st.just(b'{"EventName": "x"}' + b" " * MAX_BODY),
    )


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(st.sampled_from(["POST"] * 6 + ["GET", "PUT", "DELETE", "PATCH", "FOO"]))
    path = draw(
        st.sampled_from(
            [
                *[WEBHOOK_PATH] * 6,
                WEBHOOK_PATH + "?a=1",
                "/webhooks/AVIONTE",
                "/healthz",
                "/readyz",
                "/",
                "/" + "x" * 5000,
                "/%00",
                "*",
            ]
        )
    )
    body = draw(_json_bodies())
    credential = draw(
        st.sampled_from(
            [
                "none",
                "api_key",
                "api_key_2",
                "secret",
                "hmac_hex",
                "hmac_b64",
                "wrong_key",
                "wrong_case",
                "wrong_hmac",
                "empty",
            ]
        )
    )
    headers: list[tuple[str, str]] = []
    valid = credential in ("api_key", "api_key_2", "secret", "hmac_hex", "hmac_b64")
    if credential == "api_key":
        headers.append(("X-api-key", API_KEYS[0]))
    elif credential == "api_key_2":
        headers.append(("X-api-key", API_KEYS[1]))
    elif credential == "secret":
        headers.append(("X-Payload-Signature", SHARED_SECRETS[0]))
    elif credential == "hmac_hex":
        headers.append(("X-Payload-Signature", "sha256=" + sign_hex(body, SHARED_SECRETS[1])))
    elif credential == "hmac_b64":
        headers.append(("X-Payload-Signature", sign_base64(body, SHARED_SECRETS[0])))
    elif credential == "wrong_key":
        headers.append(("X-api-key", draw(st.one_of(SAFE, NASTY))))
    elif credential == "wrong_case":
        headers.append(("X-api-key", API_KEYS[0].swapcase()))
    elif credential == "wrong_hmac":
        headers.append(("X-Payload-Signature", sign_hex(body + b"!", SHARED_SECRETS[0])))
    elif credential == "empty":
        headers.append(("X-api-key", ""))
    names = st.sampled_from(
        [
            "X-api-key",
            "X-Payload-Signature",
            "X-Forwarded-For",
            "X-Custom",
            "Accept",
            "Content-Type",
        ]
    )
    extra = draw(st.lists(st.tuples(names, SAFE), max_size=2))
    if draw(st.integers(0, 9)) < 3:  # three requests in ten carry something hostile
        hostile = st.sampled_from(["Transfer-Encoding", "Content-Length", "Content-Encoding"])
        extra.append((draw(st.one_of(names, hostile)), draw(st.one_of(NASTY, SAFE))))
    singletons = ("Content-Type", "Transfer-Encoding", "Content-Length", "Content-Encoding")
    clean_extra = (
        all(
            name not in ("X-api-key", "X-Payload-Signature", *singletons[1:])
            and value.isascii()
            and value.isprintable()
            and len(value) < 1000
            for name, value in extra
        )
        and sum(name == "Content-Type" for name, _ in extra) < 2
    )
    headers.extend(extra)
    head = f"{method} {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return Request(
        raw=head.encode("utf-8", "surrogatepass") + body,
        webhook=method == "POST" and path.split("?")[0] == WEBHOOK_PATH,
        credential=valid,
        clean=clean_extra,
        fits=len(body) <= MAX_BODY,
    )


def send(port: int, raw: bytes) -> int | None:
    """The status code of the answer, or None if the connection closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # The server may answer and close before it has read everything.
        with contextlib.suppress(OSError):
            sock.sendall(raw)
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            return None
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


@pytest.fixture
def fuzz_receiver(
    broker_reachable: None, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, str]]:
    prefix = f"fuzz-{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = base_env(
        AMQP_URL=AMQP_URL,
        BUS_PREFIX=prefix,
        WEBHOOK_API_KEYS=",".join(API_KEYS),
        WEBHOOK_SHARED_SECRETS=",".join(SHARED_SECRETS),
        HOST="127.0.0.1",
        PORT=str(port),
        MAX_BODY_BYTES=str(MAX_BODY),
        LOG_FORMAT="json",
        AUTH_FAILURE_LIMIT="0",
    )
    asyncio.run(_bus(prefix, "setup"))
    with (tmp_path / "receiver.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "service"], env=env, stderr=log, cwd=ROOT)
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield process, port, prefix
    finally:
        process.terminate()
        process.wait(timeout=30)
        asyncio.run(_bus(prefix, "teardown"))


async def _bus(prefix: str, step: str) -> int:
    connection, bus = await open_bus(prefix)
    try:
        if step == "setup":
            await bus.declare()
            queue = await bus.channel.declare_queue(f"{prefix}.fuzz-probe", durable=True)
            await queue.bind(bus.names.events, routing_key="#")
            return 0
        if step == "count":
            probe = await bus.channel.declare_queue(f"{prefix}.fuzz-probe", passive=True)
            invalid = await bus.queue(bus.names.invalid)
            await asyncio.sleep(0.5)  # quorum queue counts lag slightly
            probe = await bus.channel.declare_queue(f"{prefix}.fuzz-probe", passive=True)
            invalid = await bus.queue(bus.names.invalid)
            return (probe.declaration_result.message_count or 0) + (
                invalid.declaration_result.message_count or 0
            )
        bus.forget_later(f"{prefix}.fuzz-probe")
        await bus.remove_all()
        return 0
    finally:
        await connection.close()


def test_fuzz_the_receiver(fuzz_receiver: tuple[subprocess.Popen[bytes], int, str]) -> None:
    process, port, prefix = fuzz_receiver
    accepted = Counter[str]()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=requests())
    def one(request: Request) -> None:
        status = send(port, request.raw)
        assert process.poll() is None, "the receiver died"
        assert status is None or status < 500 or status == 503, status
        if request.webhook and request.credential and request.clean and request.fits:
            assert status in (200, 503), status
        if request.webhook and not request.credential:
            assert status != 200
        if status == 200 and request.webhook:
            accepted["published"] += 1
        accepted[str(status)] += 1

    one()
    print(f"\nfuzz answers: {dict(accepted)}")
    assert accepted["200"] > 0
    assert accepted["401"] > 0
    assert asyncio.run(_bus(prefix, "count")) == accepted["published"]
