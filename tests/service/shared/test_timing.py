"""Timestamps as the receiver writes them: the per-second cache changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from service.shared.timing import backoff, iso_utc, utc_now, utc_text

MOMENTS = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1))


def reference(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@given(st.lists(MOMENTS, min_size=1))
def test_utc_moments_are_written_as_isoformat_writes_them(moments: list[datetime]) -> None:
    # In any order, so the cached second is both reused and replaced.
    for naive in moments:
        moment = naive.replace(tzinfo=UTC)
        assert iso_utc(moment) == reference(moment)


@given(MOMENTS, st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_other_zones_keep_their_offset(naive: datetime, minutes: int) -> None:
    moment = naive.replace(tzinfo=timezone(timedelta(minutes=minutes)))
    assert iso_utc(moment) == reference(moment)


def test_a_second_boundary() -> None:
    second = datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert iso_utc(second) == "2026-12-31T23:59:59.999Z"
    assert iso_utc(second + timedelta(microseconds=1)) == "2027-01-01T00:00:00.000Z"


def test_backoff_repeats_the_last_delay() -> None:
    assert [backoff([1, 5, 30], n) for n in range(5)] == [1, 5, 30, 30, 30]


@given(st.lists(st.integers(min_value=0, max_value=4_102_444_800 * 10**9), min_size=1))
def test_the_timestamp_is_iso_utc_to_the_microsecond(moments: list[int]) -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for ns in moments:
        expected = epoch + timedelta(microseconds=ns // 1000)
        assert utc_text(ns) == expected.isoformat(timespec="microseconds")[:-6] + "Z"


def test_lines_are_stamped_now() -> None:
    before = datetime.now(UTC)
    stamped = datetime.fromisoformat(utc_now())
    assert before <= stamped <= datetime.now(UTC)
