"""The spool's drain on its own: refusals, parking, remembered progress, and a racing writer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.shared.bus import Outgoing
from service.shared.errors import PublishNacked, PublishTimeout
from service.spool.drain import DRAIN_BATCH, PARK_AFTER, Drainer, DrainState, DrainStatus
from service.spool.parked import ParkedRecords
from service.spool.segments import SEGMENT_SUFFIX, Spool
from tests.receivers import ROOT
from tests.service.spool.test_spool import message
from tests.tools.small_fs import in_small_filesystem

FAST = (0.01,)


class Broker:
    """A publish function: refuses some ids, times out while `timing_out`, records the rest."""

    def __init__(self, *, refuse: tuple[str, ...] = ()) -> None:
        self.refuse = set(refuse)
        self.timing_out = False
        self.published: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()

    async def __call__(self, outgoing: Outgoing) -> None:
        self.attempts[outgoing.message_id] += 1
        if self.timing_out:
            raise PublishTimeout
        if outgoing.message_id in self.refuse:
            raise PublishNacked
        self.published[outgoing.message_id] += 1


async def running(drainer: Drainer, until: Callable[[], bool], within: float = 10) -> None:
    task = asyncio.create_task(drainer.run())
    try:
        async with asyncio.timeout(within):
            while not until():
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_refused_record_is_parked_and_the_others_go_once(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, max_bytes=10**9)
    for n in range(10):
        await spool.append(message(n))
    broker = Broker(refuse=("m-3",))
    failures: list[str] = []
    drainer = Drainer(spool, broker, lambda: True, on_failure=failures.append, retry_delays=FAST)
    # Parked first, then gone from the spool: the file shows a moment before the spool
    # counts the record out (never the other way round, which could lose it).
    await running(drainer, lambda: drainer.status().parked == 1 and spool.depth.records == 0)
    assert broker.published == Counter({f"m-{n}": 1 for n in range(10) if n != 3})
    assert broker.attempts["m-3"] == PARK_AFTER
    assert set(failures) == {"refused"}
    assert spool.depth.records == 0
    [parked] = list(ParkedRecords(tmp_path).read())
    assert parked.message is not None
    assert parked.message.message_id == "m-3"
    assert (parked.reason, parked.attempts) == ("PublishNacked", PARK_AFTER)
    assert parked.message.body == message(3).body
    await spool.close()


async def test_progress_past_a_waiting_record_survives_a_restart(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, max_bytes=10**9)
    for n in range(6):
        await spool.append(message(n))
    broker = Broker(refuse=("m-1",))
    drainer = Drainer(spool, broker, lambda: True, retry_delays=(60.0,))
    await running(drainer, lambda: len(broker.published) == 5)
    assert drainer.status().state is DrainState.STALLED
    assert drainer.status().error == "PublishNacked for talent.created"
    assert spool.depth.records == 1
    await spool.close()

    reopened = Spool.open(tmp_path, max_bytes=10**9)
    assert reopened.depth.records == 1  # the five confirmed ones are not counted again
    broker.refuse.clear()
    drainer = Drainer(reopened, broker, lambda: True, retry_delays=FAST)
    await running(drainer, lambda: reopened.depth.records == 0)
    assert broker.published == Counter({f"m-{n}": 1 for n in range(6)})
    await reopened.close()


async def test_a_timing_out_broker_stalls_the_drain_without_parking(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, max_bytes=10**9)
    await spool.append(message(0))
    broker = Broker()
    broker.timing_out = True
    drainer = Drainer(spool, broker, lambda: True, retry_delays=FAST)
    await running(drainer, lambda: broker.attempts["m-0"] > PARK_AFTER * 2)
    assert drainer.status() == DrainStatus(DrainState.STALLED, "PublishTimeout", 0)
    broker.timing_out = False
    await running(drainer, lambda: spool.depth.records == 0)
    assert drainer.status().state is DrainState.IDLE
    await spool.close()


async def test_records_written_while_the_drain_catches_up_are_never_removed(
    tmp_path: Path,
) -> None:
    """The drain reads, the writer commits more, then the drain finishes the segment."""
    spool = Spool.open(tmp_path, max_bytes=10**9)
    broker = Broker()
    drainer = Drainer(spool, broker, lambda: True, retry_delays=FAST)
    task = asyncio.create_task(drainer.run())
    count = 0
    for _ in range(300):
        await asyncio.gather(*(spool.append(message(count + n)) for n in range(7)))
        count += 7
        await asyncio.sleep(0)
    async with asyncio.timeout(20):
        while spool.depth.records:
            await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert broker.published == Counter({f"m-{n}": 1 for n in range(count)})
    await spool.close()
    assert Spool.open(tmp_path, max_bytes=10**9).depth.records == 0


NO_NEW_SEGMENT = """
import asyncio, json, sys
from pathlib import Path
from tests.service.spool.test_spool import message
from service.spool.segments import Spool, SpoolWriteFailed

async def main(directory):
    spool = Spool.open(directory, max_bytes=10**9)
    stored = failed = 0
    for start in range(0, 6000, 100):
        batch = [spool.append(message(n, size=1000)) for n in range(start, start + 100)]
        async with asyncio.timeout(20):  # an append that never returns fails here
            results = await asyncio.gather(*batch, return_exceptions=True)
        stored += sum(r is None for r in results)
        failed += sum(isinstance(r, SpoolWriteFailed) for r in results)
    depth = spool.depth.records
    await spool.close()
    print(json.dumps({"stored": stored, "failed": failed, "records": depth,
                      "segments": len(list(directory.glob("*.seg")))}))

asyncio.run(main(Path(sys.argv[1])))
"""


def test_a_segment_that_cannot_be_started_does_not_stop_the_writer(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    # Room for the lock and one segment only: the next segment cannot be created.
    argv = [sys.executable, "-c", NO_NEW_SEGMENT, str(directory)]
    result = subprocess.run(
        in_small_filesystem(argv, directory, size=64 << 20, inodes=3),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["stored"] + outcome["failed"] == 6000
    assert outcome["stored"] == outcome["records"] == 6000  # written on in the one segment
    assert outcome["segments"] == 1
    assert "spool segment not started" in result.stdout  # structlog's default output


async def test_segment_numbers_never_reuse_one_a_stale_cursor_names(tmp_path: Path) -> None:
    (tmp_path / "cursor").write_text(json.dumps({"segment": 41, "offset": 99, "done": []}))
    spool = Spool.open(tmp_path, max_bytes=10**9)
    segments = [name for name in os.listdir(tmp_path) if name.endswith(SEGMENT_SUFFIX)]
    assert segments == [f"{42:020d}{SEGMENT_SUFFIX}"]
    assert spool.cursor == (0, ())
    await spool.close()


async def test_a_segment_rolled_over_after_the_drain_read_it_keeps_its_new_records(
    tmp_path: Path,
) -> None:
    spool = Spool.open(tmp_path, max_bytes=10**9)
    await spool.append(message(0))
    broker = Broker()
    drainer = Drainer(spool, broker, lambda: True, retry_delays=FAST)
    await running(drainer, lambda: spool.depth.records == 0)
    segment, data = await spool.read_oldest()  # the drain is caught up: nothing past the cursor
    assert spool.cursor[0] == len(data)
    # Meanwhile the writer fills the segment past SEGMENT_BYTES and starts the next one.
    await asyncio.gather(*(spool.append(message(n, size=4096)) for n in range(1, 1100)))
    assert await spool.finish(segment) is False
    await running(drainer, lambda: spool.depth.records == 0)
    assert broker.published == Counter({f"m-{n}": 1 for n in range(1100)})
    await spool.close()


async def test_a_busy_drain_still_gives_a_refused_record_its_back_off(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, max_bytes=10**9)
    for n in range(2000):
        await spool.append(message(n))
    broker = Broker(refuse=("m-0",))
    drainer = Drainer(spool, broker, lambda: True, retry_delays=(0.2,))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await running(drainer, lambda: drainer.status().parked == 1)
    assert loop.time() - started >= 0.2 * (PARK_AFTER - 1)
    assert broker.attempts["m-0"] == PARK_AFTER
    await running(drainer, lambda: spool.depth.records == 0)
    assert sum(broker.published.values()) == 1999
    await spool.close()


async def test_a_drain_cancelled_while_its_cursor_is_saved_keeps_the_count_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool.open(tmp_path, max_bytes=10**9)
    for n in range(300):
        await spool.append(message(n))
    saving, go_on, saved = threading.Event(), threading.Event(), threading.Event()
    write_cursor = Spool._write_cursor

    def held(self: Spool, *args: Any) -> None:
        if saving.is_set():
            write_cursor(self, *args)
            return
        saving.set()
        go_on.wait(10)
        write_cursor(self, *args)
        saved.set()

    monkeypatch.setattr(Spool, "_write_cursor", held)
    broker = Broker()
    drainer = Drainer(spool, broker, lambda: True)
    task = asyncio.create_task(drainer.run())
    await asyncio.to_thread(saving.wait, 10)
    task.cancel()  # as at shutdown, while the first batch's cursor is being saved
    go_on.set()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.to_thread(saved.wait, 10)  # the save's thread ends on its own
    assert sum(broker.published.values()) == DRAIN_BATCH
    assert spool.depth.records == 300 - DRAIN_BATCH
    await running(drainer, lambda: spool.depth.records == 0)
    assert broker.published == Counter({f"m-{n}": 1 for n in range(300)})
    assert not spool.has_work
    await spool.close()
