"""The audit_log example, unit-tested with `consumers.testing` only: no broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consumers import audit_log
from consumers.testing import deliver, sample


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUDIT_LOG_DIR", str(tmp_path))
    return tmp_path


def lines(directory: Path) -> list[dict[str, Any]]:
    today = directory / f"{datetime.now(UTC):%Y-%m-%d}.jsonl"
    return [json.loads(line) for line in today.read_text().splitlines()]


async def test_every_event_is_one_line_with_its_payload_as_received(directory: Path) -> None:
    events = [sample("talent_created", tenant=6), sample("AcmeBenefitEvent", tenant=12)]
    for event in events:
        assert (await deliver(audit_log.consumer, event)).status == "ok"
    written = lines(directory)
    assert [line["payload"] for line in written] == events
    assert [line["routing_key"] for line in written] == ["talent.created", "acme.benefit.event"]
    assert [line["message_id"] for line in written] == [e["CorrelationId"] for e in events]
    assert [(line["tenant_id"], line["attempt"]) for line in written] == [(6, 1), (12, 1)]


async def test_a_body_nested_deeper_than_orjson_writes_and_on_several_lines_is_kept(
    directory: Path,
) -> None:
    deep: Any = "bottom"
    for _ in range(300):
        deep = [deep]
    nested = json.dumps({"EventName": "talent_created", "Deep": deep}).encode()
    pretty = json.dumps({"EventName": "talent_saved", "Id": 1}, indent=2).encode()
    for body in (nested, pretty):
        assert (await deliver(audit_log.consumer, body)).status == "ok"
    assert [line["payload"] for line in lines(directory)] == [
        json.loads(nested),
        json.loads(pretty),
    ]


async def test_a_disk_that_refuses_the_line_is_retried_then_dead_lettered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    monkeypatch.setenv("AUDIT_LOG_DIR", str(blocked))
    event = sample("company_updated")
    retried = await deliver(audit_log.consumer, event)
    assert (retried.status, retried.delay) == ("retry", 5)  # the default first delay
    assert isinstance(retried.error, OSError)
    last = len(audit_log.consumer.retry_delays) + 1
    assert (await deliver(audit_log.consumer, event, attempt=last)).status == "dead"
