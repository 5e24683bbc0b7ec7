"""A failed message's copies carry its traceback: Python's own, cut to 4 KiB, no secret in it."""

from __future__ import annotations

import asyncio
import inspect
import traceback
import uuid
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractIncomingMessage

from consumers.event import TRACEBACK
from consumers.runtime.failures import MAX_TRACEBACK, failure_headers, traceback_text
from consumers.topology import ConsumerQueues
from service.observability import redaction
from service.observability.redaction import MASK
from service.shared.environment import url_passwords
from tests.support import AMQP_URL, BusView
from tests.worker_processes import SpawnWorker
from tests.workers.failures import raising


def raised(function: Any, *args: Any) -> BaseException:
    try:
        function(*args)
    except BaseException as failure:  # a test looks at what was raised
        return failure
    raise AssertionError("nothing raised")


def _divide(n: int) -> float:
    return 1 / n


def _wrap(n: int) -> float:
    try:
        return _divide(n)
    except ZeroDivisionError as exc:
        raise LookupError("no rate for this placement") from exc


def _deep(n: int) -> None:
    if n == 0:
        raise RecursionError("too deep")
    _deep(n - 1)


def test_a_short_traceback_is_as_python_prints_it_cause_and_all() -> None:
    failure = raised(_wrap, 0)
    text = traceback_text(failure)
    assert text == "".join(traceback.format_exception(failure)).removesuffix("\n")
    assert "ZeroDivisionError: division by zero" in text
    assert "direct cause" in text
    assert text.endswith("LookupError: no rate for this placement")


def test_a_task_group_failure_shows_the_task_that_raised() -> None:
    async def failing_task(text: str) -> None:
        raise KeyError(text)

    async def fan_out() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(failing_task("first"))
            group.create_task(failing_task("second"))

    def run() -> None:
        asyncio.run(fan_out())

    text = traceback_text(raised(run))
    head, task = text.split("\n\nSub-exception 1 of 2:\n\n")
    assert head.startswith("Exception Group Traceback (most recent call last):")
    assert ", in fan_out\n    async with asyncio.TaskGroup() as group:" in head
    assert head.endswith("ExceptionGroup: unhandled errors in a TaskGroup (2 sub-exceptions)")
    assert task.startswith("Traceback (most recent call last):")
    assert ", in failing_task\n" in task
    assert task.endswith("KeyError: 'first'")


def test_a_deep_traceback_keeps_its_innermost_frames_and_counts_the_rest() -> None:
    failure = raised(_deep, 600)
    frames = sum(1 for _ in traceback.walk_tb(failure.__traceback__))
    text = traceback_text(failure)
    assert len(text.encode()) <= MAX_TRACEBACK
    first, *lines = text.splitlines()
    left_out = int(first.removeprefix("... (").removesuffix(" earlier frames left out)"))
    shown = sum(line.startswith('  File "') for line in lines)
    [repeated] = [line for line in lines if line.startswith("  [Previous line repeated")]
    again = int(repeated.split()[3])
    assert left_out + shown + again == frames  # every frame told of, once
    assert lines[-3].endswith(", in _deep")
    assert lines[-1] == "RecursionError: too deep"


def _refuse(text: str) -> None:
    raise ValueError(text)


def test_a_long_message_is_cut_to_leave_room_for_the_frames() -> None:
    text = traceback_text(raised(_refuse, "é" * 5000))
    data = text.encode()
    assert len(data) <= MAX_TRACEBACK
    assert data.decode() == text  # cut between characters, never inside one
    assert text.startswith("Traceback (most recent call last):\n  File ")
    assert ", in _refuse\n" in text
    assert text.splitlines()[-1].startswith("ValueError: éé")
    assert text.endswith("é ...")


def test_every_failure_header_is_masked_as_a_log_line_is(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"s3cret-{uuid.uuid4()}"
    monkeypatch.setattr(redaction, "_ACTIVE", [])
    monkeypatch.setattr(redaction, "_LEARNT", {secret})

    def leak() -> None:
        token = secret
        raise PermissionError(f"token {token} refused")

    message = cast(AbstractIncomingMessage, type("Message", (), {"headers": {}})())
    headers = failure_headers("crm", message, "placement.updated", 1, raised(leak))
    assert headers["x-error-message"] == f"token {MASK} refused"
    text = str(headers[TRACEBACK])
    assert secret not in text
    assert text.endswith(f"PermissionError: token {MASK} refused")


async def _dead_letter(bus: BusView, queues: ConsumerQueues) -> dict[str, Any]:
    letter = await bus.get(await bus.queue(queues.dead), timeout=20)
    return dict(letter.headers)


def _line_of(function: Any, text: str) -> int:
    lines, start = inspect.getsourcelines(function)
    return start + next(i for i, line in enumerate(lines) if text in line)


@pytest.mark.rabbit
async def test_a_dead_letter_tells_where_its_handler_failed_and_no_secret(
    bus: BusView, spawn_worker: SpawnWorker
) -> None:
    database_password = f"pg-{uuid.uuid4().hex}"
    worker = await spawn_worker(
        "tests.workers.failures.raising",
        raising.consumer,
        METRICS_PORT="0",
        LOG_FORMAT="json",
        # Not used by this consumer, but a secret the worker is configured with.
        DEDUPE_DATABASE_URL=f"postgresql://relay:{database_password}@127.0.0.1:1/dedupe",
    )
    queues = ConsumerQueues(bus.names.prefix, raising.consumer.name)
    secrets = [database_password, *url_passwords(AMQP_URL)]
    leak = " and ".join(f"relay:{secret}@crm" for secret in secrets)
    await bus.publish_event("placement_updated", Leak=leak)
    text = str((await _dead_letter(bus, queues))[TRACEBACK])

    assert text.startswith("Traceback (most recent call last):\n")
    assert ", in handle\n    _connect(" in text
    raised_at = _line_of(raising._log_in, "raise ")
    assert f'raising.py", line {raised_at}, in _log_in\n' in text
    masked = " and ".join(f"relay:{MASK}@crm" for _ in secrets)
    assert text.endswith(f"ConnectionRefusedError: the CRM refused {masked}")
    assert not any(secret in text for secret in secrets)

    await bus.publish_event("placement_updated", Depth=300)
    deep = str((await _dead_letter(bus, queues))[TRACEBACK])
    assert len(deep.encode()) <= MAX_TRACEBACK
    assert deep.splitlines()[0].endswith(" earlier frames left out)")
    assert deep.startswith("... (")
    assert ", in _ping\n" in deep
    assert deep.endswith("ValueError: the bottom of the stack")

    assert await worker.stop() == 0
    assert worker.events("handler failed")  # the log told of the same failure ...
    assert not any(secret in worker.text() for secret in secrets)  # ... masked alike
