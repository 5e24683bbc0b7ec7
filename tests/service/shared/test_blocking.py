"""What `service.shared.blocking` relies on in aiormq, loudly: an upgrade that moves it fails here.

`tests/test_alarms.py` shows the whole path on a node with a real memory alarm; these
check the hook itself on a real connection, with the frames aiormq's reader hands it.
"""

from __future__ import annotations

import aio_pika
import pytest
from aiormq import spec

from service.shared import blocking
from tests.support import AMQP_URL

pytestmark = pytest.mark.rabbit


async def test_the_hook_sees_blocked_and_unblocked_after_aiormq_has_handled_them() -> None:
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        underlay = (await channel.get_underlay_channel()).connection
        blocking.check(underlay)
        seen: list[str | None] = []
        blocking.watch(underlay, seen.append)
        # The reader calls the handler by its mangled name on the instance: call it so.
        handle_blocked = underlay._Connection__handle_connection_blocked  # type: ignore[attr-defined]
        handle_unblocked = underlay._Connection__handle_connection_unblocked  # type: ignore[attr-defined]
        await handle_blocked(spec.Connection.Blocked(reason="low on memory"))
        assert seen == ["low on memory"]
        # aiormq's own handling ran too: its writer now waits for the unblock.
        assert not underlay._Connection__connection_unblocked.is_set()  # type: ignore[attr-defined]
        await handle_unblocked(spec.Connection.Unblocked())
        assert seen == ["low on memory", None]
        assert underlay._Connection__connection_unblocked.is_set()  # type: ignore[attr-defined]
        # Still a working connection.
        await channel.declare_queue(exclusive=True)


def test_a_connection_without_the_handlers_is_refused_by_name() -> None:
    with pytest.raises(blocking.Incompatible, match="_Connection__handle_connection_blocked"):
        blocking.check(object())  # type: ignore[arg-type]
