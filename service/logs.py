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
from collections.abc import Iterable
from typing import Any, BinaryIO, cast

import orjson
import structlog

_QUIET_LIBRARIES = ("aio_pika", "aiormq", "aiohttp.access")


def _orjson_dumps(event: dict[str, Any], **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


class _Redactor:
    """Masks every configured secret in the string values of a log event (library lines)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def __call__(
        self, _: Any, __: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        for key, value in event.items():
            if isinstance(value, str):
                for secret in self._secrets:
                    if secret in value:
                        value = value.replace(secret, "[redacted]")
                event[key] = value
        return event


class _RedactingJSON:
    """Renders an event as one JSON line with every configured secret masked in it.

    JSON escapes a string character by character, so wherever a secret sits in the
    event, the line holds its escaped form: one search of the rendered bytes per secret
    replaces a scan of every field.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {orjson.dumps(secret)[1:-1] for secret in secrets if secret}
        self._forms = tuple(sorted(forms, key=len, reverse=True))

    def __call__(self, _: Any, __: str, event: structlog.typing.EventDict) -> bytes:
        line = orjson.dumps(event, default=repr)
        for form in self._forms:
            if form in line:
                line = line.replace(form, b"[redacted]")
        return line


def bound_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger resolved now, for lines written per message, after `configure_logging`.

    The lazy proxy from `structlog.get_logger` pays for a lookup on every call.
    """
    return cast(structlog.typing.FilteringBoundLogger, structlog.get_logger(name).bind())


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
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    secrets = tuple(redact)
    common: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    shared: list[structlog.typing.Processor] = [*common, _Redactor(secrets)]
    own: list[structlog.typing.Processor]
    text_renderer: structlog.typing.Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        own = [*shared, renderer]
        text = io.TextIOWrapper(out, write_through=True)

        def factory(*args: Any) -> Any:
            return _named(structlog.PrintLogger(text), args)

        text_renderer = renderer
    else:
        own = [*common, _RedactingJSON(secrets)]

        def factory(*args: Any) -> Any:
            return _named(_BytesLogger(out), args)

        text_renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)

    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=own,
        logger_factory=factory,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(io.TextIOWrapper(out, write_through=True))
    handler.addFilter(_NoPayloads())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, text_renderer],
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
