"""`python -m service parked`: list the spool's parked records, or publish them again.

Reads SPOOL_DIR and AMQP_URL (or AMQP_URL_FILE) like the receiver. It may run beside
the receiver that owns the spool: the receiver only adds files to `parked/`, and
this command removes a file only after the broker confirmed its message.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping

import aiormq
from aiormq import spec

from service.settings import Settings
from service.shared import brokers
from service.shared.environment import EnvReader
from service.shared.errors import SettingsError
from service.spool.parked import Parked, ParkedRecords

CONFIRM_TIMEOUT = 10.0


def run(environ: Mapping[str, str], *, replay: bool, limit: int | None) -> int:
    """List or replay; exit 0 when every record asked for was replayed (or only listed)."""
    env = EnvReader(environ)
    try:
        spool_dir = env.path("SPOOL_DIR")
        if spool_dir is None:
            raise SettingsError("SPOOL_DIR", "is not set; name the receiver's spool directory")
        url = env.amqp_url("AMQP_URL", Settings.amqp_url.value)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parked = ParkedRecords(spool_dir)
    try:
        records = list(parked.read())
    except OSError as exc:
        print(f"error: SPOOL_DIR: cannot read {parked.directory}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"{len(records)} parked record{'' if len(records) == 1 else 's'} in {parked.directory}")
    for record in records:
        info = record.summary()
        print(
            f"  {info['file']}  {info['reason']} x{info['attempts']}  parked {info['parked_at']}"
            f"  exchange {info['exchange']!r}  routing key {info['routing_key']}"
            f"  message id {info['message_id']}"
        )
    if not replay:
        return 0
    chosen = records if limit is None else records[:limit]
    try:
        replayed, failed = asyncio.run(_replay(url, parked, chosen))
    except (OSError, RuntimeError, aiormq.exceptions.AMQPError) as exc:
        # RuntimeError covers aiormq's ChannelInvalidStateError on a channel that closed.
        print(f"error: broker {brokers.display(url)}: {type(exc).__name__}", file=sys.stderr)
        return 1
    print(f"replayed {replayed}, {failed} not replayed (left in place)")
    return 0 if failed == 0 else 1


async def _replay(url: str, parked: ParkedRecords, records: list[Parked]) -> tuple[int, int]:
    connection = await brokers.connect(url)
    replayed = failed = 0
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        underlay = await channel.get_underlay_channel()
        for record in records:
            message = record.message
            if message is None:
                print(f"  {record.path.name}: damaged, cannot be replayed", file=sys.stderr)
                failed += 1
                continue
            try:
                confirm = await asyncio.wait_for(
                    underlay.basic_publish(
                        message.body,
                        exchange=message.exchange,
                        routing_key=message.routing_key,
                        properties=message.properties,
                        mandatory=True,
                    ),
                    CONFIRM_TIMEOUT,
                )
            except (aiormq.exceptions.PublishError, aiormq.exceptions.DeliveryError, TimeoutError):
                confirm = None
            if not isinstance(confirm, spec.Basic.Ack):
                print(f"  {record.path.name}: refused again", file=sys.stderr)
                failed += 1
                continue
            parked.remove(record)
            replayed += 1
    finally:
        await connection.close()
    return replayed, failed
