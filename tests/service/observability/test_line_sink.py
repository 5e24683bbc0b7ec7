"""Lines logged in one turn of a server's loop go out in one write, in order; none is lost."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import BinaryIO, cast

import orjson
import structlog

from service.observability import logs
from service.observability.line_sink import LineSink


class Recorded:
    """A binary stream that keeps each write apart."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def text(self) -> bytes:
        return b"".join(self.writes)


class Broken(Recorded):
    def write(self, data: bytes) -> int:
        raise BrokenPipeError("the reader is gone")


def sink_over(out: Recorded) -> LineSink:
    return LineSink(cast(BinaryIO, out))


def line(sink: LineSink, text: str) -> None:
    sink.write(text.encode() + b"\n")
    sink.flush()


async def test_lines_of_one_turn_go_out_together_on_the_next() -> None:
    out = Recorded()
    sink = sink_over(out)
    sink.gather_on(asyncio.get_running_loop())
    for n in range(5):
        line(sink, f"line {n}")
    assert out.writes == []
    await asyncio.sleep(0)
    assert out.writes == [b"".join(f"line {n}\n".encode() for n in range(5))]
    line(sink, "next turn")
    await asyncio.sleep(0)
    assert out.writes[1:] == [b"next turn\n"]
    sink.release()


async def test_a_line_from_another_thread_goes_at_once_after_those_kept() -> None:
    out = Recorded()
    sink = sink_over(out)
    sink.gather_on(asyncio.get_running_loop())
    line(sink, "kept on the loop")
    thread = threading.Thread(target=line, args=(sink, "from a thread"))
    thread.start()
    thread.join()
    assert out.text() == b"kept on the loop\nfrom a thread\n"
    sink.release()


def test_without_a_running_loop_every_line_goes_at_once() -> None:
    out = Recorded()
    sink = sink_over(out)
    line(sink, "before any loop")
    assert out.writes == [b"before any loop\n"]

    async def gather_then_stop() -> None:
        sink.gather_on(asyncio.get_running_loop())
        line(sink, "last of the loop")

    # The loop stops before its next turn: the line waits, and goes with the next one.
    asyncio.run(gather_then_stop())
    line(sink, "after the loop")
    assert out.text() == b"before any loop\nlast of the loop\nafter the loop\n"


async def test_release_writes_what_is_kept_and_stops_gathering() -> None:
    out = Recorded()
    sink = sink_over(out)
    sink.gather_on(asyncio.get_running_loop())
    line(sink, "kept")
    sink.release()
    assert out.text() == b"kept\n"
    line(sink, "at once")
    assert out.text() == b"kept\nat once\n"


async def test_a_broken_stream_never_fails_the_caller() -> None:
    sink = sink_over(Broken())
    sink.gather_on(asyncio.get_running_loop())
    line(sink, "lost with the reader")
    await asyncio.sleep(0)
    sink.release()
    line(sink, "also lost, quietly")


async def test_structlog_and_library_lines_keep_their_order_through_one_sink(
    restored_logging: None,
) -> None:
    out = Recorded()
    logs.configure_logging("info", "json", stream=cast(BinaryIO, out))
    try:
        logs.gather_on(asyncio.get_running_loop())
        structlog.get_logger("relay.test").info("first")
        logging.getLogger("library.test").warning("second")
        structlog.get_logger("relay.test").info("third")
        assert out.writes == []
        await asyncio.sleep(0)
        assert len(out.writes) == 1
        events = [orjson.loads(raw)["event"] for raw in out.text().splitlines()]
        assert events == ["first", "second", "third"]
    finally:
        logs.release()
