"""Logging, configured once: JSON lines in production, a console renderer on a TTY.

Library loggers (aiohttp, aio-pika) go through the same renderer, so every line
of the process has one shape. Tracebacks are plain, without local variables.
As a last line of defence every configured secret is masked in every line, and
message bodies that a library would put in a log are left out.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import structlog

from service.observability.redaction import MaskFields, RedactingJSON, forget_redactors, learnt
from service.shared.timing import utc_now

_QUIET_LIBRARIES = ("aio_pika", "aiormq", "aiohttp.access")
# How logging was last configured, for a helper process to log alike (`setup`).
_SETUP: dict[str, Any] = {"level": "info", "format": "auto", "secrets": ()}
# While lines are JSON: where they go (`json_sink`).
_SINK: dict[str, JsonSink] = {}


def setup() -> dict[str, Any]:
    """The level, format and secrets logging was configured with, and those learnt since."""
    return {**_SETUP, "secrets": [*_SETUP["secrets"], *learnt()]}


def bound_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger resolved now, for lines written per message, after `configure_logging`.

    The lazy proxy from `structlog.get_logger` pays for a lookup on every call.
    """
    return cast(structlog.typing.FilteringBoundLogger, structlog.get_logger(name).bind())


@dataclass(frozen=True, slots=True)
class JsonSink:
    """Where `configure_logging` sends JSON lines: its chain, its renderer and its writer.

    `write` writes a rendered line and its newline to the stream, under the lock
    structlog's loggers of that stream hold.
    """

    chain: list[structlog.typing.Processor]
    render: RedactingJSON
    write: Callable[[bytes], None]


def json_sink() -> JsonSink | None:
    """Where JSON lines go, while structlog is configured as `configure_logging` left it."""
    sink = _SINK.get("json")
    if sink is None or structlog.get_config()["processors"] is not sink.chain:
        return None
    return sink


def _stamp(
    logger: Any, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    # structlog's TimeStamper formats a whole datetime for every line (2.5 us against 0.7).
    event["timestamp"] = utc_now()
    return event


def _is_payload(value: object) -> bool:
    return isinstance(value, bytes | bytearray | memoryview) or hasattr(value, "body")


class _NoPayloads(logging.Filter):
    """Keeps message bodies that aiormq or aio-pika pass as log arguments out of the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_is_payload(arg) for arg in record.args):
            record.args = tuple("<payload>" if _is_payload(a) else a for a in record.args)
        return True


class _BytesLogger(structlog.BytesLogger):
    """A BytesLogger that can carry the name it was asked for."""


def _named(logger: Any, args: tuple[Any, ...]) -> Any:
    # structlog's add_logger_name reads `.name`, as on a standard library logger.
    logger.name = str(args[0]) if args else "relay"
    return logger


# One text wrapper per stream, kept: a collected wrapper would close the stream under it.
_TEXT: dict[int, tuple[BinaryIO, io.TextIOWrapper]] = {}


def _text(out: BinaryIO) -> io.TextIOWrapper:
    # Text UTF-8 cannot encode (a lone surrogate) is escaped: a log call never raises for it.
    kept = _TEXT.get(id(out))
    if kept is None or kept[0] is not out:
        wrapper = io.TextIOWrapper(
            out, encoding="utf-8", errors="backslashreplace", write_through=True
        )
        kept = _TEXT[id(out)] = (out, wrapper)
    return kept[1]


def _trace_ids() -> list[structlog.typing.Processor]:
    """While tracing is on, a processor that adds the current span's ids to each line."""
    from service.observability import tracing

    if not tracing.enabled():
        return []
    from service.observability.spans import current_ids

    def add(
        logger: Any, method: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        ids = current_ids()
        if ids is not None:
            event.setdefault("trace_id", ids[0])
            event.setdefault("span_id", ids[1])
        return event

    return [add]


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    *,
    redact: Iterable[str] = (),
    stream: BinaryIO | None = None,
) -> None:
    """Configure structlog and the standard library once, for the whole process.

    `redact` holds every secret the process knows; none of them will appear in a log line.
    The relay's own lines are rendered by structlog straight to `stream` (stderr by
    default), without the standard library's per-record cost; library lines take the
    standard library's path to the same renderer.
    """
    out = stream or sys.stderr.buffer
    forget_redactors()
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    secrets = tuple(redact)
    _SETUP.update(level=level, format=fmt, secrets=secrets)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        *_trace_ids(),
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        _stamp,
        structlog.processors.format_exc_info,
    ]
    last: list[structlog.typing.Processor]
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        last = [MaskFields(secrets), renderer]
        text = _text(out)

        def factory(*args: Any) -> Any:
            return _named(structlog.PrintLogger(text), args)

        text_last = last
    else:
        json_line = RedactingJSON(secrets)
        last = [json_line]

        def factory(*args: Any) -> Any:
            return _named(_BytesLogger(out), args)

        def text_line(logger: Any, method: str, event: structlog.typing.EventDict) -> str:
            return json_line(logger, method, event).decode()

        text_last = [text_line]

    numeric = logging.getLevelName(level.upper())
    processors = [*shared, *last]
    _SINK.clear()
    if not use_console:
        _SINK["json"] = JsonSink(processors, json_line, _BytesLogger(out).msg)
    structlog.configure(
        processors=processors,
        logger_factory=factory,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(_text(out))
    handler.addFilter(_NoPayloads())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *text_last],
        )
    )
    root = logging.getLogger()
    # Replace only the handler an earlier call installed; leave others alone.
    for old in [h for h in root.handlers if getattr(h, "relay", False)]:
        root.removeHandler(old)
    handler.relay = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
