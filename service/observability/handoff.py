"""Finished spans handed to an exporter process, used only while tracing is on.

Encoding a span for OTLP costs about as much CPU as making it, and the SDK's batch
processor does it on a thread of the traced process, under the same interpreter lock
as the event loop. Here a span's fields go, as plain values, down a pipe to
`python -m service.observability.export_process`, which rebuilds each span and runs
the SDK's own batch processor and exporter on it. The traced process keeps making
spans with the SDK; only the encoding and the export leave it.

Traces stay best effort, as with the SDK's processor: past `OTEL_BSP_MAX_QUEUE_SIZE`
spans waiting for the pipe, new ones are dropped and counted, and if the exporter
process dies, the spans in its pipe are lost and another one starts.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Link, SpanContext

from service.shared.errors import SettingsError

log = structlog.get_logger("service.tracing")

# Spans gather this long, or until BATCH of them (at most half the queue) wait, before
# they go down the pipe together. Each hand-over takes the interpreter lock from the
# event loop a few times, which stalls it for a moment each: a few a second, not twenty.
GATHER_SECONDS = 0.25
BATCH = 1024
RESTART_PAUSE = 1.0
STOP_SECONDS = 15.0
LENGTH = struct.Struct(">I")


def queue_size(environ: Mapping[str, str]) -> int:
    """`OTEL_BSP_MAX_QUEUE_SIZE`, checked here as the SDK would check it in the exporter process.

    Raises `SettingsError` for a value the exporter process's batch processor would refuse,
    so that the traced process does not start instead of its exporter dying at each start.
    """
    values = {}
    for name, default in (
        ("OTEL_BSP_MAX_QUEUE_SIZE", 2048),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
        ("OTEL_BSP_SCHEDULE_DELAY", 5000),
    ):
        raw = environ.get(name, "").strip()
        try:
            values[name] = int(raw) if raw else default
        except ValueError:
            raise SettingsError(name, f"must be a whole number, got {raw!r}") from None
        if values[name] <= 0:
            raise SettingsError(name, f"must be positive, got {values[name]}")
    if values["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] > values["OTEL_BSP_MAX_QUEUE_SIZE"]:
        raise SettingsError(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            f"must not exceed OTEL_BSP_MAX_QUEUE_SIZE ({values['OTEL_BSP_MAX_QUEUE_SIZE']})",
        )
    return values["OTEL_BSP_MAX_QUEUE_SIZE"]


def frame(value: Any) -> bytes:
    """One message down the pipe: its length, then its marshalled value."""
    try:
        body = marshal.dumps(value)
    except ValueError:
        # A subclass of str or int among the values: marshal takes only the types.
        body = marshal.dumps(plain(value))
    return LENGTH.pack(len(body)) + body


def plain(value: Any) -> Any:
    """`value` with every str, int, float and bytes made of its exact type.

    Any other object (only an attribute value can be one) becomes what the SDK's span
    would have made of it: its text, or None.
    """
    if isinstance(value, bool) or value is None:
        return value
    # The value itself, not what a subclass's __str__ or __int__ says (an enum's name).
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return tuple(plain(v) for v in value)
    return plain(BoundedAttributes(attributes={"value": value})["value"])


def links_of(links: Sequence[Link]) -> tuple[tuple[Any, ...], ...]:
    """Links as plain values, in a record's layout."""
    return tuple(
        (
            link.context.trace_id,
            link.context.span_id,
            int(link.context.trace_flags),
            link.context.is_remote,
            tuple(link.context.trace_state.items()),
            dict(link.attributes or {}),
            link.dropped_attributes,
        )
        for link in links
    )


def identity(context: SpanContext, parent: SpanContext | None) -> tuple[Any, ...]:
    """A span's ids, flags, trace state and parent, in a record's layout."""
    return (
        context.trace_id,
        context.span_id,
        int(context.trace_flags),
        tuple(context.trace_state.items()),
        None if parent is None else (parent.trace_id, parent.span_id, parent.is_remote),
    )


def compact(span: ReadableSpan) -> tuple[Any, ...]:
    """A finished span as plain values (`export_process.rebuild` reads them back)."""
    context = span.context
    parent = span.parent
    scope = span.instrumentation_scope
    status = span.status
    assert context is not None  # an SDK span always has one
    return (
        span.name,
        *identity(context, parent),
        span.kind.value,
        span.start_time,
        span.end_time,
        dict(span.attributes or {}),
        tuple(
            (e.name, e.timestamp, dict(e.attributes or {}), e.dropped_attributes)
            for e in span.events
        ),
        links_of(span.links),
        status.status_code.value,
        status.description,
        None
        if scope is None
        else (scope.name, scope.version, scope.schema_url, dict(scope.attributes or {})),
        span.dropped_attributes,
        span.dropped_events,
        span.dropped_links,
    )


class SpanHandoff(SpanProcessor):
    """Hands sampled, finished spans to an exporter process it starts and keeps running."""

    def __init__(
        self, resource: Resource, environ: Mapping[str, str], setup: Mapping[str, Any]
    ) -> None:
        self._opening = frame(
            {
                "resource": dict(resource.attributes),
                "schema_url": resource.schema_url,
                **setup,
            }
        )
        self._environ = dict(environ)
        self._limit = queue_size(environ)
        self._pending: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        self._batch = max(1, min(BATCH, self._limit // 2))
        # Set by the first span waiting, and by the batch's last.
        self._wake = threading.Event()
        self._full = threading.Event()
        self._closing = False
        self.dropped = 0
        self._child = self._spawn()
        self._thread = threading.Thread(target=self._run, name="SpanHandoff", daemon=True)
        self._thread.start()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do until a span ends."""

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        self.hand(compact(span))

    def hand(self, record: tuple[Any, ...]) -> None:
        """Queue a finished, sampled span's record (`compact`'s layout) for the pipe."""
        with self._lock:
            if len(self._pending) >= self._limit:
                self.dropped += 1
                return
            self._pending.append(record)
            waiting = len(self._pending)
        if waiting == 1:
            self._wake.set()
        if waiting == self._batch:
            self._full.set()

    def shutdown(self) -> None:
        """Hand over what is waiting, then let the exporter process export it and exit."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._full.set()
        self._thread.join(STOP_SECONDS)
        child = self._child
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("span exporter process did not stop; killing it", pid=child.pid)
            child.kill()
            child.wait()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wake the handoff; the exporter process exports on its own schedule."""
        self._wake.set()
        self._full.set()
        return True

    def _spawn(self) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            [sys.executable, "-m", "service.observability.export_process"],
            stdin=subprocess.PIPE,
            env=self._environ,
            # Out of our process group: a Ctrl-C meant for us must not cut its export short.
            process_group=0,
        )
        self._started = time.monotonic()
        self._write(child, self._opening)
        return child

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if not self._closing:
                self._full.wait(GATHER_SECONDS)
            self._wake.clear()
            self._full.clear()
            self._hand_over()
            if self._closing:
                return

    def _hand_over(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            dropped, self.dropped = self.dropped, 0
        if dropped:
            log.warning("spans dropped: the exporter process is behind", spans=dropped)
        if not batch:
            return
        try:
            data = frame(batch)
        except Exception:
            log.exception("spans could not be handed over", lost=len(batch))
            return
        self._send(data, len(batch))

    def _send(self, data: bytes, spans: int) -> None:
        try:
            self._write(self._child, data)
            return
        except OSError:
            pass
        code = self._child.wait()
        if self._child.stdin is not None:
            with contextlib.suppress(OSError):
                self._child.stdin.close()
        log.warning("span exporter process exited; starting another", code=code, lost=spans)
        if time.monotonic() - self._started < RESTART_PAUSE:
            time.sleep(RESTART_PAUSE)
        try:
            self._child = self._spawn()
        except OSError as exc:
            log.error("cannot start the span exporter process", error=str(exc))

    @staticmethod
    def _write(child: subprocess.Popen[bytes], data: bytes) -> None:
        assert child.stdin is not None
        view = memoryview(data)
        fd = child.stdin.fileno()
        while view:
            view = view[os.write(fd, view) :]
