"""`consumers history search|replay`: find stored events, and send them again to one consumer.

Both need HISTORY_DATABASE_URL (exit 2 without it). `search` prints newest first;
`replay` sends oldest first to the consumer's own queue, only events its current
bindings match, and says how far it got if it is interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any

import orjson
from tqdm import tqdm

from consumers.cli.names import require
from consumers.history.query import Filter, count, parse_event, parse_time, parse_where, search
from consumers.history.replay import Progress, replay
from consumers.history.settings import HistorySettings
from consumers.history.store import Entry, HistoryStore, open_pool
from consumers.settings import WorkerSettings
from service.shared import brokers
from service.shared.bus import BusNames

DEFAULT_LIMIT = 50


def add(commands: Any) -> None:
    history = commands.add_parser("history", help="search the event history, or replay from it")
    actions = history.add_subparsers(dest="action", required=True)
    found = actions.add_parser("search", help="print matching events, newest first")
    _filters(found)
    found.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N", help="default 50")
    found.add_argument("--json", action="store_true", help="one JSON object per line")
    found.set_defaults(func=lambda args, settings: _run(_search, args, settings))
    again = actions.add_parser("replay", help="send matching events to one consumer's queue")
    again.add_argument("consumer", metavar="CONSUMER", help="the consumer to send them to")
    _filters(again)
    again.add_argument("--dry-run", action="store_true", help="count, send nothing")
    again.set_defaults(func=lambda args, settings: _run(_replay, args, settings))


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="T", help="ISO 8601 (UTC if no offset) or 90m, 2h, 3d")
    parser.add_argument("--until", metavar="T", help="as --since; the end, not included")
    parser.add_argument("--event", metavar="EVENT", help="event name or topic pattern")
    parser.add_argument("--tenant", type=int, metavar="N", help="FrontOfficeTenantId")
    parser.add_argument("--id", metavar="MESSAGE_ID", help="one message id")
    parser.add_argument("--where", metavar="JSON", help="a JSON object the payload contains")


def filter_from(args: argparse.Namespace) -> Filter:
    """The filter the options describe; `SettingsError` names a bad one."""
    return Filter(
        since=parse_time("--since", args.since) if args.since else None,
        until=parse_time("--until", args.until) if args.until else None,
        event=parse_event(args.event) if args.event else None,
        tenant=args.tenant,
        message_id=args.id,
        where=parse_where(args.where) if args.where else None,
    )


Action = Callable[[argparse.Namespace, WorkerSettings, HistoryStore, Filter], Any]


def _run(action: Action, args: argparse.Namespace, settings: WorkerSettings) -> int:
    chosen = filter_from(args)
    history = HistorySettings.from_env(os.environ)

    async def main() -> int:
        pool = await open_pool(history.database_url.value, history.display)
        store = HistoryStore(pool, settings.scope)
        try:
            await store.create()
            code: int = await action(args, settings, store, chosen)
            return code
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 130  # Ctrl-C: a replay has said how far it got


def line(entry: Entry) -> str:
    """One event as a line: time, event name, tenant, message id, routing key."""
    when = entry.received_at.isoformat(timespec="milliseconds")
    tenant = entry.tenant_id if entry.tenant_id is not None else "-"
    return f"{when}  {entry.event}  tenant={tenant}  id={entry.message_id}  {entry.routing_key}"


async def _search(
    args: argparse.Namespace, settings: WorkerSettings, store: HistoryStore, chosen: Filter
) -> int:
    for entry in await search(store, chosen, args.limit):
        if args.json:
            print(orjson.dumps(entry.as_json()).decode())
        else:
            print(line(entry))
    return 0


async def _replay(
    args: argparse.Namespace, settings: WorkerSettings, store: HistoryStore, chosen: Filter
) -> int:
    names = BusNames(settings.bus_prefix)
    connection = await brokers.connect(settings.amqp_url.value)
    async with connection:
        await require(connection, names, [args.consumer])
        total = await count(store, chosen)
        progress = Progress()
        bar = tqdm(total=total, unit="event", disable=not sys.stderr.isatty(), file=sys.stderr)

        def shown(now: Progress) -> None:
            bar.update(now.replayed + now.skipped - bar.n)

        try:
            await replay(
                connection,
                names,
                args.consumer,
                store,
                chosen,
                progress,
                dry_run=args.dry_run,
                shown=shown,
            )
        except (asyncio.CancelledError, KeyboardInterrupt):
            bar.close()
            resume = f"; to go on, add --since {progress.last.isoformat()}" if progress.last else ""
            print(
                f"interrupted: replayed {progress.replayed} event(s) to {args.consumer} "
                f"(each confirmed), {progress.skipped} skipped{resume}",
                file=sys.stderr,
            )
            raise
        bar.close()
    what = "would replay" if args.dry_run else "replayed"
    print(
        f"{what} {progress.replayed} event(s) to {args.consumer}, "
        f"{progress.skipped} skipped (not bound)"
        + ("; nothing sent (--dry-run)" if args.dry_run else "")
    )
    return 0
