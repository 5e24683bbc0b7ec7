"""The directly encoded publish frames are byte for byte pamqp's, for any message."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands

from service.publishing.frames import pamqp_frames, publish_frames
from tests.support import fixture_bodies

text = st.text(max_size=40)
short = st.text(alphabet=string.printable + "éü中", max_size=60)
header_values = st.one_of(
    st.text(max_size=80),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
    st.none(),
)
headers = st.dictionaries(st.text(max_size=20), header_values, max_size=8)
moments = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-5))]),
)


@st.composite
def properties(draw: st.DrawFn) -> commands.Basic.Properties:
    return commands.Basic.Properties(
        content_type=draw(st.one_of(st.none(), st.just(""), short)),
        headers=draw(st.one_of(st.none(), headers)),  # type: ignore[arg-type]
        delivery_mode=draw(st.one_of(st.none(), st.integers(1, 2))),
        message_id=draw(st.one_of(st.none(), st.just(""), short)),
        timestamp=draw(st.one_of(st.none(), moments)),
        message_type=draw(st.one_of(st.none(), short)),
        correlation_id=draw(st.one_of(st.none(), st.none(), short)),
        priority=draw(st.one_of(st.none(), st.none(), st.integers(0, 9))),
    )


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    channel=st.integers(1, 2047),
    exchange=short,
    routing_key=short,
    body=st.binary(max_size=300),
    props=properties(),
    mandatory=st.booleans(),
    max_content_size=st.integers(16, 400),
)
def test_frames_match_pamqp(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    props: commands.Basic.Properties,
    mandatory: bool,
    max_content_size: int,
) -> None:
    args = (channel, exchange, routing_key, body, props)
    options = {"mandatory": mandatory, "max_content_size": max_content_size}
    try:
        expected = pamqp_frames(*args, **options)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return  # pamqp refuses it
    assert publish_frames(*args, **options) == expected  # type: ignore[arg-type]


def test_a_relay_message_takes_the_fast_path_and_matches() -> None:
    body = fixture_bodies()["placement_updated"]
    props = commands.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id="ba623a16-8ecc-4a2d-a751-f796556c0c3b",
        message_type="placement_updated",
        timestamp=datetime.now(UTC),
        headers={
            "x-event-name": "placement_updated",
            "x-tenant-id": 6,
            "x-received-at": "2026-12-01T10:00:00.000Z",
            "x-delivery-id": "2d1e6c3e-6f0a-4b8e-9a57-0d6c1a1f3b2e",
            "x-auth": "api_key",
        },
    )
    options = {"mandatory": True, "max_content_size": 131064}
    fast = publish_frames(5, "avionte.events", "placement.updated", body, props, **options)  # type: ignore[arg-type]
    assert fast == pamqp_frames(5, "avionte.events", "placement.updated", body, props, **options)  # type: ignore[arg-type]
