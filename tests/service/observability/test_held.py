"""Delivery lines held to the end of the loop's pass: one write, the stream's order kept."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import threading
from typing import Any

import orjson
import pytest
import structlog

from service.observability.lines import info_lines
from service.observability.logs import configure_logging
from tests.receivers import ROOT

FIELDS = {"outcome": "accepted", "status": 200}


class Writes(io.BytesIO):
    """A stream that counts the calls that wrote to it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def write(self, data: Any) -> int:
        self.calls += 1
        return super().write(data)


def events(stream: io.BytesIO) -> list[str]:
    return [str(orjson.loads(line)["event"]) for line in stream.getvalue().splitlines()]


@pytest.mark.usefixtures("restored_logging")
async def test_a_pass_s_lines_are_written_at_its_end_in_one_call() -> None:
    stream = Writes()
    configure_logging("info", "json", stream=stream)
    line = info_lines("service.delivery")
    for number in range(5):
        line(f"delivery {number}", dict(FIELDS))
    assert stream.getvalue() == b""
    await asyncio.sleep(0)
    assert events(stream) == [f"delivery {number}" for number in range(5)]
    assert stream.calls == 1


@pytest.mark.usefixtures("restored_logging")
async def test_any_other_line_writes_the_held_ones_first() -> None:
    stream = io.BytesIO()
    configure_logging("info", "json", stream=stream)
    line = info_lines("service.delivery")
    line("first delivery", dict(FIELDS))
    structlog.get_logger("service").warning("a relay line")
    line("second delivery", dict(FIELDS))
    logging.getLogger("aiohttp.server").error("a library line")
    line("third delivery", dict(FIELDS))
    await asyncio.sleep(0)
    assert events(stream) == [
        "first delivery",
        "a relay line",
        "second delivery",
        "a library line",
        "third delivery",
    ]


@pytest.mark.usefixtures("restored_logging")
def test_outside_a_loop_a_line_is_written_at_once() -> None:
    stream = io.BytesIO()
    configure_logging("info", "json", stream=stream)
    info_lines("service.delivery")("delivery", dict(FIELDS))
    assert events(stream) == ["delivery"]


@pytest.mark.usefixtures("restored_logging")
def test_a_loop_that_ended_before_its_flush_holds_nothing_back_from_the_next() -> None:
    stream = io.BytesIO()
    configure_logging("info", "json", stream=stream)
    line = info_lines("service.delivery")

    async def log_and_leave(event: str) -> None:
        line(event, dict(FIELDS))

    first = asyncio.new_event_loop()
    first.run_until_complete(log_and_leave("on a loop stopped at once"))
    first.close()  # its pass's flush never ran
    asyncio.run(log_and_leave("on the next loop"))
    assert events(stream) == ["on a loop stopped at once", "on the next loop"]


@pytest.mark.usefixtures("restored_logging")
async def test_lines_from_another_thread_meanwhile_are_whole_and_none_lost() -> None:
    stream = io.BytesIO()
    configure_logging("info", "json", stream=stream)
    line = info_lines("service.delivery")
    other = structlog.get_logger("elsewhere")

    def log_from_a_thread() -> None:
        for number in range(2000):
            other.warning("from a thread", number=number)

    thread = threading.Thread(target=log_from_a_thread)
    thread.start()
    for number in range(2000):
        line("delivery", {**FIELDS, "number": number})
        if number % 7 == 0:
            await asyncio.sleep(0)
    await asyncio.to_thread(thread.join)
    await asyncio.sleep(0)
    written = [orjson.loads(raw) for raw in stream.getvalue().splitlines()]
    for event in ("delivery", "from a thread"):
        numbers = [entry["number"] for entry in written if entry["event"] == event]
        assert numbers == list(range(2000)), event


def test_lines_held_when_the_process_exits_are_written() -> None:
    # The loop stops in the pass that logged: the flush scheduled for it never runs.
    program = """
import asyncio, sys
from service.observability.lines import info_lines
from service.observability.logs import configure_logging
configure_logging("info", "json")
line = info_lines("service.delivery")
def last():
    line("last delivery", {"outcome": "accepted"})
    loop.stop()
loop = asyncio.new_event_loop()
loop.call_soon(last)
loop.run_forever()
sys.exit(3)
"""
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert [orjson.loads(raw)["event"] for raw in done.stderr.splitlines()] == ["last delivery"]
