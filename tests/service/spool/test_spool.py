"""The spool on its own: durability, damage, bounds, the lock, and draining in order."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.shared.bus import AuthMethod, BusNames, Outgoing, Receipt, event_message
from service.shared.envelope import parse
from service.shared.errors import BrokerUnavailable
from service.spool.drain import Drainer
from service.spool.format import Damage, Record, decode, encode, scan
from service.spool.segments import SEGMENT_SUFFIX, Spool, SpoolFull, SpoolUnusable
from tests.receivers import ROOT

NAMES = BusNames("spooltest")


def message(n: int, size: int = 0) -> Outgoing:
    body = json.dumps(
        {
            "EventName": "talent_created",
            "FrontOfficeTenantId": 6,
            "CorrelationId": f"m-{n}",
            "Pad": "x" * size,
        }
    ).encode()
    receipt = Receipt(f"d-{n}", AuthMethod.HMAC, datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC))
    return event_message(NAMES, parse(body), body, receipt)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SEGMENT_SUFFIX}"))


class Collector:
    """A publish function that can be told to fail."""

    def __init__(self) -> None:
        self.published: list[str] = []
        self.failing = False

    async def __call__(self, message: Outgoing) -> None:
        if self.failing:
            raise BrokerUnavailable
        self.published.append(message.message_id)


async def drain_until(spool: Spool, collector: Collector, count: int) -> None:
    task = asyncio.create_task(Drainer(spool, collector, lambda: True).run())
    try:
        async with asyncio.timeout(10):
            while len(collector.published) < count or spool.depth.records:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_record_round_trips_exactly() -> None:
    original = message(1)
    [record] = list(scan(encode(original)))
    assert isinstance(record, Record)
    copy = record.message
    assert (copy.exchange, copy.routing_key, copy.body) == (
        original.exchange,
        original.routing_key,
        original.body,
    )
    for field in (
        "message_id",
        "message_type",
        "content_type",
        "delivery_mode",
        "timestamp",
        "headers",
    ):
        assert getattr(copy.properties, field) == getattr(original.properties, field), field


@pytest.mark.parametrize(
    "damage",
    ["truncated_tail", "flipped_byte", "garbage_between", "flipped_length"],
)
def test_damage_is_found_and_skipped(damage: str) -> None:
    first, second, third = (encode(message(n)) for n in range(3))
    if damage == "truncated_tail":
        data, expect_ids = first + second + third[: len(third) // 2], ["m-0", "m-1"]
    elif damage == "flipped_byte":
        broken = bytearray(second)
        broken[len(broken) // 2] ^= 0xFF
        data, expect_ids = first + bytes(broken) + third, ["m-0", "m-2"]
    elif damage == "garbage_between":
        data, expect_ids = first + b"\x00garbage AVS1 more" + second + third, ["m-0", "m-1", "m-2"]
    else:
        broken = bytearray(first)
        broken[5] ^= 0x7F  # inside the length field
        data, expect_ids = bytes(broken) + second + third, ["m-1", "m-2"]
    items = list(scan(data))
    ids = [item.message.message_id for item in items if isinstance(item, Record)]
    assert ids == expect_ids
    damaged = [item for item in items if isinstance(item, Damage)]
    assert len(damaged) == 1
    covered = sum(item.end - item.start for item in items)
    assert covered == len(data)


def test_an_empty_segment_holds_nothing() -> None:
    assert list(scan(b"")) == []


def test_decode_refuses_nonsense() -> None:
    with pytest.raises((ValueError, KeyError)):
        decode(b"\x00\x00\x00\x02{}")


async def test_appends_survive_a_reopen_and_drain_oldest_first(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, max_bytes=10**9)
    await asyncio.gather(*(spool.append(message(n)) for n in range(50)))
    assert spool.depth.records == 50
    await spool.close()

    reopened = Spool.open(tmp_path, max_bytes=10**9)
    assert reopened.depth.records == 50
    collector = Collector()
    await drain_until(reopened, collector, 50)
    assert collector.published == [f"m-{n}" for n in range(50)]
    assert reopened.depth.records == reopened.depth.bytes == 0
    await reopened.close()
    assert Spool.open(tmp_path, max_bytes=10**9).depth.records == 0


async def test_records_leave_only_after_their_confirm(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, max_bytes=10**9)
    for n in range(5):
        await spool.append(message(n))
    collector = Collector()
    collector.failing = True
    task = asyncio.create_task(Drainer(spool, collector, lambda: True).run())
    await asyncio.sleep(0.3)
    assert spool.depth.records == 5
    collector.failing = False
    async with asyncio.timeout(10):
        while spool.depth.records:
            await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert collector.published == [f"m-{n}" for n in range(5)]
    await spool.close()


async def test_a_torn_tail_from_a_crash_is_moved_aside(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, max_bytes=10**9)
    for n in range(3):
        await spool.append(message(n))
    await spool.close()
    [segment] = segments(tmp_path)
    with segment.open("ab") as file:  # a crash in the middle of the next write
        file.write(encode(message(3))[:20])
    flipped = bytearray(segment.read_bytes())
    flipped[len(encode(message(0))) + 30] ^= 0x01  # and a flipped byte in the second record
    segment.write_bytes(bytes(flipped))

    reopened = Spool.open(tmp_path, max_bytes=10**9)
    assert reopened.depth.records == 2
    collector = Collector()
    await drain_until(reopened, collector, 2)
    assert collector.published == ["m-0", "m-2"]
    moved = sorted((tmp_path / "corrupt").iterdir())
    assert len(moved) == 2
    assert sum(path.stat().st_size for path in moved) == len(encode(message(1))) + 20
    await reopened.close()


async def test_an_empty_or_foreign_file_does_not_stop_the_drain(tmp_path: Path) -> None:
    (tmp_path / f"{1:020d}{SEGMENT_SUFFIX}").write_bytes(b"")
    (tmp_path / f"{2:020d}{SEGMENT_SUFFIX}").write_bytes(b"not a spool at all")
    (tmp_path / f"{3:020d}{SEGMENT_SUFFIX}").write_bytes(encode(message(7)))
    spool = Spool.open(tmp_path, max_bytes=10**9)
    assert spool.depth.records == 1
    collector = Collector()
    await drain_until(spool, collector, 1)
    assert collector.published == ["m-7"]
    await spool.close()


async def test_max_bytes_refuses_what_does_not_fit(tmp_path: Path) -> None:
    one = len(encode(message(0)))
    spool = Spool.open(tmp_path, max_bytes=one * 3)
    for n in range(3):
        await spool.append(message(n))
    assert not spool.accepting
    with pytest.raises(SpoolFull):
        await spool.append(message(3))
    assert spool.depth.records == 3
    await spool.close()


async def test_one_receiver_per_directory(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, max_bytes=10**9)
    with pytest.raises(SpoolUnusable, match="in use by another receiver"):
        Spool.open(tmp_path, max_bytes=10**9)
    await spool.close()
    Spool.open(tmp_path, max_bytes=10**9)


def test_an_unusable_directory_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SpoolUnusable):
        Spool.open(blocker / "spool", max_bytes=10**9)


FULL_DISK = """
import asyncio, json, resource, signal, sys
from pathlib import Path
from tests.service.spool.test_spool import message
from service.spool.segments import Spool, SpoolWriteFailed
from service.spool.format import Record, scan

async def main(directory):
    spool = Spool.open(directory, max_bytes=10**9)
    # The file may not grow past 20,000 bytes: the disk is "full" from there on.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))
    stored = failed = 0
    for n in range(40):
        try:
            await spool.append(message(n, size=300))
            stored += 1
        except SpoolWriteFailed:
            failed += 1
    accepting = spool.accepting
    await spool.close()
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    data = b"".join(p.read_bytes() for p in sorted(directory.glob("*.seg")))
    items = list(scan(data))
    print(json.dumps({"stored": stored, "failed": failed, "accepting": accepting,
                      "records": sum(isinstance(i, Record) for i in items),
                      "damage": len(items) - sum(isinstance(i, Record) for i in items),
                      "bytes": len(data)}))

asyncio.run(main(Path(sys.argv[1])))
"""


def test_a_full_disk_fails_the_write_and_leaves_no_half_record(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["stored"] > 0
    assert outcome["failed"] > 0
    assert outcome["stored"] + outcome["failed"] == 40
    assert outcome["records"] == outcome["stored"]  # every 200 is on disk, whole
    assert outcome["damage"] == 0  # and nothing half-written is left behind
    assert outcome["bytes"] <= 20_000
    assert outcome["accepting"] is False
