"""Traces from the POST to every handler: real receiver and worker processes, a test collector.

Every process exports over OTLP/HTTP to an endpoint this test serves
(`tests/collector.py`), configured only by the standard OpenTelemetry variables.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from asyncio.subprocess import PIPE
from pathlib import Path

import aiohttp
import pytest

from service.http.app import WEBHOOK_PATH
from tests.collector import CONSUMER, ERROR, INTERNAL, PRODUCER, SERVER, Collector, Span
from tests.receivers import ROOT, SpawnReceiver, base_env, cut_off, deliver
from tests.support import AMQP_URL, BusView
from tests.tools.tcp_proxy import proxy_to
from tests.worker_processes import SpawnWorker
from tests.workers import counter, recorder
from tests.workers.failures import failing

pytestmark = [pytest.mark.rabbit, pytest.mark.timeout(120)]

INCOMING_TRACE = "0af7651916cd43dd8448eb211c80319c"
INCOMING_SPAN = "b7ad6b7169203331"


def of_kind(spans: list[Span], kind: int, trace_id: str) -> list[Span]:
    return [s for s in spans if s.kind == kind and s.trace_id == trace_id]


def child_of(spans: list[Span], parent: Span) -> list[Span]:
    return [s for s in spans if s.parent == parent.span_id and s.trace_id == parent.trace_id]


async def test_one_trace_goes_from_the_post_to_both_consumers(
    bus: BusView,
    spawn_receiver: SpawnReceiver,
    spawn_worker: SpawnWorker,
    collector: Collector,
    tmp_path: Path,
) -> None:
    await spawn_worker(
        "tests.workers.recorder",
        recorder.consumer,
        counter.consumer,
        args=("tests.workers.counter",),
        RECORD_FILE=str(tmp_path / "records.jsonl"),
        COUNT_FILE=str(tmp_path / "counted.txt"),
        LOG_FORMAT="json",
        **collector.env("relay-worker"),
    )
    receiver = await spawn_receiver(
        TRACE_SENDER_CONTEXT="authenticated", **collector.env("relay-receiver")
    )
    parent = {"traceparent": f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"}
    status, answer = await deliver(receiver, "talent_created", headers=parent)
    assert status == 200

    def complete(spans: list[Span]) -> bool:
        return len(of_kind(spans, CONSUMER, INCOMING_TRACE)) == 2 and any(
            s.kind == SERVER for s in spans
        )

    await collector.until(complete)
    spans = collector.spans
    [server] = of_kind(spans, SERVER, INCOMING_TRACE)
    # Opted in, an authenticated sender's traceparent is honoured.
    assert server.parent == INCOMING_SPAN
    assert server.service == "relay-receiver"
    assert server.name == "POST /webhooks/avionte"
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/webhooks/avionte"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["relay.outcome"] == "accepted"
    # One span a delivery: it says what was published, and the message carries it.
    assert server.attributes["messaging.system"] == "rabbitmq"
    assert server.attributes["messaging.operation.type"] == "send"
    assert server.attributes["messaging.destination.name"] == bus.names.events
    assert server.attributes["messaging.rabbitmq.destination.routing_key"] == "talent.created"
    assert server.attributes["messaging.message.id"] == answer["id"]
    assert server.attributes["relay.stored"] == "broker"
    assert not [s for s in spans if s.kind == PRODUCER]
    handlings = child_of(spans, server)
    assert sorted(s.attributes["relay.consumer"] for s in handlings) == ["counter", "recorder"]
    for handling in handlings:
        assert handling.kind == CONSUMER
        assert handling.service == "relay-worker"
        consumer = handling.attributes["relay.consumer"]
        assert handling.attributes["messaging.destination.name"] == f"{bus.names.prefix}.{consumer}"
        assert handling.attributes["messaging.rabbitmq.destination.routing_key"] == "talent.created"
        assert handling.attributes["messaging.message.id"] == answer["id"]
        assert handling.attributes["relay.attempt"] == 1
        assert handling.attributes["relay.outcome"] == "ok"
        [handler] = child_of(spans, handling)
        assert handler.kind == INTERNAL


async def test_a_retry_is_in_the_same_trace_with_the_error_recorded(
    bus: BusView,
    spawn_receiver: SpawnReceiver,
    spawn_worker: SpawnWorker,
    collector: Collector,
    tmp_path: Path,
) -> None:
    await spawn_worker(
        "tests.workers.failures.failing",
        failing.consumer,
        RECORD_FILE=str(tmp_path / "records.jsonl"),
        **collector.env("relay-worker"),
    )
    receiver = await spawn_receiver(**collector.env("relay-receiver"))
    body = json.dumps(
        {"EventName": "talent_created", "CorrelationId": str(uuid.uuid4()), "Fail": "boom"}
    )
    status, _ = await deliver(receiver, raw=body.encode())
    assert status == 200

    def both_attempts(spans: list[Span]) -> bool:
        attempts = [int(s.attributes["relay.attempt"]) for s in spans if s.kind == CONSUMER]
        return sorted(attempts) == [1, 2] and any(s.kind == SERVER for s in spans)

    await collector.until(both_attempts)
    first, second = sorted(
        (s for s in collector.spans if s.kind == CONSUMER),
        key=lambda s: s.attributes["relay.attempt"],
    )
    assert first.trace_id == second.trace_id
    [server] = [s for s in collector.spans if s.kind == SERVER]
    assert first.trace_id == server.trace_id
    assert (first.attributes["relay.outcome"], second.attributes["relay.outcome"]) == (
        "retried",
        "dead",
    )
    assert first.status == ERROR
    assert first.attributes["error.type"] == "RuntimeError"
    exceptions = [attrs for name, attrs in first.events if name == "exception"]
    assert exceptions
    assert exceptions[0]["exception.type"] == "RuntimeError"
    assert exceptions[0]["exception.message"] == "boom"
    [handler] = child_of(collector.spans, first)
    assert handler.status == ERROR
    assert any(name == "exception" for name, _ in handler.events)
    # The dead letter keeps the context too: a replay of it lands in the same trace.
    [letter] = await bus.drain(await bus.queue(f"{bus.names.prefix}.failing.dead"))
    traceparent = str((letter.headers or {})["traceparent"])
    assert traceparent.split("-")[1] == server.trace_id


async def test_a_spooled_delivery_keeps_its_context_through_the_drain(
    bus: BusView,
    spawn_receiver: SpawnReceiver,
    spawn_worker: SpawnWorker,
    collector: Collector,
    tmp_path: Path,
) -> None:
    await spawn_worker(
        "tests.workers.recorder",
        recorder.consumer,
        RECORD_FILE=str(tmp_path / "records.jsonl"),
        **collector.env("relay-worker"),
    )
    async with proxy_to(AMQP_URL) as (proxy, through):
        receiver = await spawn_receiver(
            AMQP_URL=through, SPOOL_DIR=str(tmp_path / "spool"), **collector.env("relay-receiver")
        )
        await cut_off(proxy, receiver)
        status, _ = await deliver(receiver, "talent_created")
        assert status == 200
        assert receiver.events("delivery")[-1]["stored"] == "spool"
        proxy.refuse(False)

        def drained_and_handled(spans: list[Span]) -> bool:
            return any(s.kind == CONSUMER for s in spans) and any(
                "from the spool" in s.name for s in spans
            )

        await collector.until(drained_and_handled, within=40)
    spans = collector.spans
    [server] = [s for s in spans if s.kind == SERVER]
    assert server.attributes["relay.stored"] == "spool"
    [spooled] = [s for s in child_of(spans, server) if s.kind == INTERNAL]
    assert spooled.name == "spool"
    assert spooled.attributes["relay.cause"]
    [drain] = [s for s in spans if "from the spool" in s.name]
    assert drain.kind == PRODUCER
    assert (drain.trace_id, drain.parent) == (server.trace_id, server.span_id)
    [handling] = [s for s in spans if s.kind == CONSUMER]
    assert (handling.trace_id, handling.parent) == (server.trace_id, server.span_id)


async def test_a_delivery_nothing_stored_has_its_error_on_its_span(
    spawn_receiver: SpawnReceiver, collector: Collector
) -> None:
    async with proxy_to(AMQP_URL) as (proxy, through):
        receiver = await spawn_receiver(AMQP_URL=through, **collector.env("relay-receiver"))
        await cut_off(proxy, receiver)
        status, _ = await deliver(receiver, "talent_created")
        assert status == 503
        await collector.until(lambda spans: any(s.kind == SERVER for s in spans))
    [server] = [s for s in collector.spans if s.kind == SERVER]
    assert server.status == ERROR
    assert server.attributes["http.response.status_code"] == 503
    assert server.attributes["relay.outcome"] == "unavailable"
    [error] = receiver.events("delivery")
    assert server.attributes["error.type"] == error["error"]
    [raised] = [attrs["exception.type"] for name, attrs in server.events if name == "exception"]
    assert raised.rsplit(".", 1)[-1] == error["error"]
    assert "relay.stored" not in server.attributes


async def test_log_lines_carry_the_trace_and_span_ids(
    spawn_receiver: SpawnReceiver,
    spawn_worker: SpawnWorker,
    collector: Collector,
    tmp_path: Path,
) -> None:
    worker = await spawn_worker(
        "tests.workers.recorder",
        recorder.consumer,
        RECORD_FILE=str(tmp_path / "records.jsonl"),
        LOG_FORMAT="json",
        **collector.env("relay-worker"),
    )
    receiver = await spawn_receiver(**collector.env("relay-receiver"))
    assert (await deliver(receiver, "talent_created"))[0] == 200
    # Each process exports on its own schedule: wait for both spans, whichever comes first.
    await collector.until(
        lambda spans: {SERVER, CONSUMER} <= {s.kind for s in spans},
    )
    [server] = [s for s in collector.spans if s.kind == SERVER]
    [handling] = [s for s in collector.spans if s.kind == CONSUMER]
    [delivered] = receiver.events("delivery")
    assert (delivered["trace_id"], delivered["span_id"]) == (server.trace_id, server.span_id)
    [handled] = worker.events("message handled")
    assert (handled["trace_id"], handled["span_id"]) == (handling.trace_id, handling.span_id)


async def test_with_no_variable_set_nothing_is_loaded_and_no_header_added(
    bus: BusView, spawn_receiver: SpawnReceiver
) -> None:
    probe = await bus.probe("talent.#")
    receiver = await spawn_receiver()
    assert (await deliver(receiver, "talent_created"))[0] == 200
    message = await bus.get(probe)
    assert not {"traceparent", "tracestate"} & set(message.headers or {})
    assert "trace_id" not in receiver.events("delivery")[-1]
    # A receiver built as `python -m service` builds it imports no OpenTelemetry module.
    script = (
        "import sys; from service.http.app import create_app;"
        " from service.observability import tracing;"
        " from service.settings import Settings;"
        " settings = Settings.from_env({'WEBHOOK_API_KEYS': 'k'});"
        " create_app(settings, tracer=tracing.tracer('receiver'));"
        " print(sorted({m for m in sys.modules if m.startswith('opentelemetry')}))"
    )
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=base_env(), cwd=ROOT, stdout=PIPE, stderr=PIPE
    )
    out, err = await done.communicate()
    assert done.returncode == 0, err.decode()
    assert out.decode().strip() == "[]"


@pytest.mark.parametrize("opted_in", [False, True], ids=["default", "authenticated"])
async def test_a_request_chooses_neither_sampling_nor_trace_unless_trusted(
    bus: BusView, spawn_receiver: SpawnReceiver, collector: Collector, opted_in: bool
) -> None:
    probe = await bus.probe("talent.#")
    chosen = {"TRACE_SENDER_CONTEXT": "authenticated"} if opted_in else {}
    receiver = await spawn_receiver(
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.1",
        **chosen,
        **collector.env("relay-receiver"),
    )
    sampled = {
        "traceparent": f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01",
        "tracestate": "intruder=1",
    }
    async with aiohttp.ClientSession() as session:
        for _ in range(40):
            async with session.post(
                f"{receiver.url}{WEBHOOK_PATH}", data=b"{}", headers=sampled
            ) as response:
                assert response.status == 401
    assert (await deliver(receiver, "talent_created", headers=sampled))[0] == 200
    assert await receiver.stop() == 0  # exports what is buffered
    message = await bus.get(probe)
    headers = message.headers or {}
    joined = [s for s in collector.spans if s.trace_id == INCOMING_TRACE]
    if opted_in:
        # Only the authenticated delivery joined the sender's trace, and it was sampled.
        assert [s.kind for s in joined if s.kind == SERVER] == [SERVER]
        assert str(headers["traceparent"]).split("-")[1] == INCOMING_TRACE
    else:
        assert joined == []
        assert str(headers["traceparent"]).split("-")[1] != INCOMING_TRACE
        assert "intruder" not in str(headers.get("tracestate", ""))


async def test_an_unsampled_delivery_makes_no_span_and_its_message_says_unsampled(
    bus: BusView,
    spawn_receiver: SpawnReceiver,
    spawn_worker: SpawnWorker,
    collector: Collector,
    tmp_path: Path,
) -> None:
    probe = await bus.probe("talent.#")
    worker = await spawn_worker(
        "tests.workers.recorder",
        recorder.consumer,
        RECORD_FILE=str(tmp_path / "records.jsonl"),
        LOG_FORMAT="json",
        **collector.env("relay-worker"),
    )
    receiver = await spawn_receiver(
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.5",
        **collector.env("relay-receiver"),
    )
    sent = 40
    for _ in range(sent):
        assert (await deliver(receiver, "talent_created"))[0] == 200
    assert await receiver.stop() == 0  # exports what is buffered
    parents = [str((await bus.get(probe)).headers["traceparent"]) for _ in range(sent)]
    await asyncio.sleep(1)
    assert await worker.stop() == 0
    flags = {tp.split("-")[1]: int(tp.split("-")[3], 16) for tp in parents}
    kept = {t for t, f in flags.items() if f & 1}
    assert 0 < len(kept) < sent  # the sampler both kept and dropped some
    servers = {s.trace_id for s in collector.spans if s.kind == SERVER}
    consumers = {s.trace_id for s in collector.spans if s.kind == CONSUMER}
    # A span exactly for each kept delivery, in the trace id its message carries.
    assert servers == kept
    assert len([s for s in collector.spans if s.kind == SERVER]) == len(kept)
    assert consumers <= kept  # the worker follows the receiver's decision
    # A dropped delivery's log line still names its trace, as its message does.
    logged = {line["trace_id"] for line in receiver.events("delivery")}
    assert logged == set(flags)
