"""`consumers tail [PATTERN...]`: print each event as it is published, until Ctrl-C.

When the broker connection is lost (its node stopped, say), the tail says so on stderr
and connects again, to the next node of AMQP_URL that answers; what was published in
between is not shown. It ends only on Ctrl-C or SIGTERM, with exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aio_pika
import orjson

from consumers.operations.tail import Seen, Tail
from consumers.patterns import normalize_pattern
from consumers.settings import WorkerSettings
from service.shared import brokers
from service.shared.bus import BusNames
from service.shared.timing import backoff

AGAIN = (0.5, 1.0, 2.0, 5.0)


def add(commands: Any) -> None:
    parser = commands.add_parser(
        "tail", help="print events as they are published; takes nothing from any consumer"
    )
    parser.add_argument(
        "patterns", nargs="*", metavar="PATTERN", help="event names or topic patterns (default #)"
    )
    parser.add_argument("--json", action="store_true", help="print each whole message as JSON")
    parser.set_defaults(func=command)


def command(args: argparse.Namespace, settings: WorkerSettings) -> int:
    patterns = tuple(normalize_pattern(p) for p in args.patterns) or ("#",)
    asyncio.run(_tail(settings, patterns, as_json=args.json))
    return 0


def line(seen: Seen) -> str:
    """One event as a line: time, event name, tenant, message id, routing key."""
    message = seen.message
    headers = message.headers or {}
    tenant = headers.get("x-tenant-id")
    when = headers.get("x-received-at") or datetime.now(UTC).isoformat(timespec="milliseconds")
    name = headers.get("x-event-name") or message.type or "?"
    parts = [
        _text(when),
        _text(name),
        f"tenant={_text(tenant) if tenant is not None else '-'}",
        f"id={message.message_id}",
        message.routing_key or "",
    ]
    if seen.unrouted:
        parts.append("(unrouted: no consumer is bound)")
    return "  ".join(parts)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def whole(seen: Seen) -> str:
    """One event as JSON: where it went, its properties, headers and body."""
    message = seen.message
    try:
        body: object = orjson.loads(message.body)
    except orjson.JSONDecodeError:
        body = message.body.decode("utf-8", "replace")
    return orjson.dumps(
        {
            "routing_key": message.routing_key,
            "unrouted": seen.unrouted,
            "message_id": message.message_id,
            "type": message.type,
            "timestamp": message.timestamp.isoformat() if message.timestamp else None,
            "content_type": message.content_type,
            "headers": message.headers or {},
            "body": body,
        },
        default=str,
    ).decode()


async def _tail(settings: WorkerSettings, patterns: tuple[str, ...], *, as_json: bool) -> None:
    render = whole if as_json else line

    def show(seen: Seen) -> None:
        print(render(seen), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    said = f"tailing {settings.bus_prefix}: {' '.join(patterns)} (Ctrl-C ends)"
    failures = 0
    while not stop.is_set():
        try:
            connection = await brokers.connect(settings.amqp_url.value)
        except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as exc:
            if failures == 0:
                print(
                    f"tail: cannot reach the broker ({type(exc).__name__}); trying again",
                    file=sys.stderr,
                )
            failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff(AGAIN, failures))
            continue
        failures = 0
        ended = asyncio.Event()  # Ctrl-C, or the connection went
        relay = asyncio.create_task(_set_when(stop, ended))
        async with connection:
            connection.close_callbacks.add(lambda *_, ended=ended: ended.set())
            tail = Tail(connection, BusNames(settings.bus_prefix), show, patterns=patterns)
            try:
                # Said once its queues are bound: what is published after it shows.
                await tail.run(ended, ready=partial(print, said, file=sys.stderr, flush=True))
            except (aio_pika.exceptions.AMQPError, RuntimeError, OSError, TimeoutError):
                pass  # the connection went while the tail set up or closed
            finally:
                relay.cancel()
        if not stop.is_set():
            print("tail: lost the broker connection; connecting again", file=sys.stderr)
            said = f"tailing {settings.bus_prefix} again; events published meanwhile are not shown"


async def _set_when(first: asyncio.Event, then: asyncio.Event) -> None:
    await first.wait()
    then.set()
