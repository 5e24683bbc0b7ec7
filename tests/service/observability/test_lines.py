"""The delivery line written in one step is the line a bound logger writes."""

from __future__ import annotations

import io

import orjson
import pytest
import structlog

from service.observability.lines import info_lines
from service.observability.logs import bound_logger, configure_logging

SECRET = "lines-secret-5678"
FIELDS = {
    "outcome": "accepted",
    "status": 200,
    "duration_ms": 1.25,
    "delivery_id": "5f0c6d5e-8d1e-4f5e-9a3b-2c7d8e9f0a1b",
    "remote": f"127.0.0.1 {SECRET}",
    "routing_key": "placement.placement_updated",
}


def written(stream: io.BytesIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.usefixtures("restored_logging")
def test_the_line_is_the_bound_loggers_line_masked_alike() -> None:
    stream = io.BytesIO()
    configure_logging("info", "json", redact=[SECRET], stream=stream)
    bound_logger("service.delivery").info("delivery", **FIELDS)
    info_lines("service.delivery")("delivery", dict(FIELDS))
    slow, fast = written(stream)
    assert list(fast) == list(slow)
    assert {**fast, "timestamp": None} == {**slow, "timestamp": None}
    assert fast["remote"] == "127.0.0.1 [redacted]"
    assert SECRET.encode() not in stream.getvalue()


@pytest.mark.usefixtures("restored_logging")
def test_below_its_level_nothing_is_written() -> None:
    stream = io.BytesIO()
    configure_logging("warning", "json", stream=stream)
    info_lines("service.delivery")("delivery", dict(FIELDS))
    structlog.get_logger("other").warning("kept")
    assert [line["event"] for line in written(stream)] == ["kept"]


@pytest.mark.usefixtures("restored_logging")
def test_console_lines_take_structlog_path_masked() -> None:
    stream = io.BytesIO()
    configure_logging("info", "console", redact=[SECRET], stream=stream)
    info_lines("service.delivery")("delivery", dict(FIELDS))
    text = stream.getvalue().decode()
    assert "delivery" in text
    assert "placement.placement_updated" in text
    assert "[redacted]" in text
    assert SECRET not in text


@pytest.mark.usefixtures("restored_logging")
def test_logging_configured_elsewhere_is_followed() -> None:
    configure_logging("info", "json", stream=io.BytesIO())
    with structlog.testing.capture_logs() as captured:
        info_lines("service.delivery")("delivery", dict(FIELDS))
    assert captured == [{**FIELDS, "event": "delivery", "log_level": "info"}]


@pytest.mark.usefixtures("restored_logging")
def test_logs_captured_after_the_writer_was_made_are_captured() -> None:
    stream = io.BytesIO()
    configure_logging("info", "json", stream=stream)
    line = info_lines("service.delivery")
    with structlog.testing.capture_logs() as captured:
        line("delivery", dict(FIELDS))
    line("delivery", dict(FIELDS))
    assert captured == [{**FIELDS, "event": "delivery", "log_level": "info"}]
    assert [entry["event"] for entry in written(stream)] == ["delivery"]
