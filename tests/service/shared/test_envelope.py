"""Envelope parsing, message ids and routing-key normalization (pure code)."""

from __future__ import annotations

import hashlib
import json

import pytest

from service.shared.envelope import parse, routing_key
from service.shared.errors import InvalidEnvelope
from tests.support import fixture_bodies


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # The examples of the contract.
        ("placement_updated", "placement.updated"),
        ("VMS_job_created", "vms.job.created"),
        ("AcmeTalentBenefitEligibleEvent", "acme.talent.benefit.eligible.event"),
        # Every documented name keeps its words.
        ("talent_login_created", "talent.login.created"),
        ("company_statuses_updated", "company.statuses.updated"),
        ("placement_end_reasons_updated", "placement.end.reasons.updated"),
        ("skillpositions_saved", "skillpositions.saved"),
        ("VMS_job_declined", "vms.job.declined"),
        # CamelCase, acronyms and mixed case.
        ("TalentCreated", "talent.created"),
        ("talentCreated", "talent.created"),
        ("HTTPServerError", "http.server.error"),
        ("ACMEPlacementUpdated", "acme.placement.updated"),
        ("Placement_UPDATED", "placement.updated"),
        ("PLACEMENT_UPDATED", "placement.updated"),
        ("JobV2Updated", "job.v2.updated"),
        ("talent2_created", "talent2.created"),
        # Separators: underscore, hyphen, dot, space, and runs of them.
        ("placement-updated", "placement.updated"),
        ("placement.updated", "placement.updated"),
        ("placement updated", "placement.updated"),
        ("  placement__-. updated  ", "placement.updated"),
        # Stray characters are dropped; accents are stripped.
        ("placement_updated!", "placement.updated"),
        ("place#ment_up*dated", "placement.updated"),
        ("company.#", "company"),
        ("Société_créée", "societe.creee"),
        ("talent\u200b_created", "talent.created"),
        # Nothing usable is left.
        ("!!!", ""),
        ("___", ""),
    ],
)
def test_routing_key(name: str, expected: str) -> None:
    assert routing_key(name) == expected


def test_every_fixture_parses_as_front_office() -> None:
    for stem, body in fixture_bodies().items():
        envelope = parse(body)
        raw = json.loads(body)
        assert envelope.event_name == raw["EventName"] == stem
        assert envelope.routing_key == stem.replace("_", ".")
        assert envelope.tenant_id == 6
        assert envelope.message_id == raw["CorrelationId"]
        assert envelope.correlation_id == raw["CorrelationId"]
        assert envelope.payload == raw


def test_back_office_shape_prefers_deduplication_id() -> None:
    body = json.dumps(
        {
            "EventName": "AcmeTalentBenefitEligibleEvent",
            "TenantId": 42,
            "DeduplicationId": "dedup-123",
            "CorrelationId": "corr-456",
        }
    ).encode()
    envelope = parse(body)
    assert envelope.routing_key == "acme.talent.benefit.eligible.event"
    assert envelope.tenant_id == 42
    assert envelope.message_id == "dedup-123"
    assert envelope.correlation_id == "corr-456"


def test_message_id_falls_back_to_body_digest() -> None:
    body = b'{"EventName": "talent_saved", "TenantId": 7}'
    assert parse(body).message_id == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    "payload",
    [
        {"EventName": "x_y", "CorrelationId": ""},
        {"EventName": "x_y", "CorrelationId": "   "},
        {"EventName": "x_y", "CorrelationId": True},
        {"EventName": "x_y", "CorrelationId": {"nested": 1}},
        {"EventName": "x_y", "CorrelationId": "c" * 256},
    ],
)
def test_unusable_ids_fall_back_to_body_digest(payload: dict[str, object]) -> None:
    body = json.dumps(payload).encode()
    assert parse(body).message_id == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    ("payload", "tenant"),
    [
        ({"FrontOfficeTenantId": 6}, 6),
        ({"TenantId": 9}, 9),
        ({"FrontOfficeTenantId": "12"}, 12),
        ({"FrontOfficeTenantId": True}, None),
        ({"FrontOfficeTenantId": 2**63}, None),
        ({"FrontOfficeTenantId": "six"}, None),
        ({"FrontOfficeTenantId": "\u00b2"}, None),
        ({"FrontOfficeTenantId": "\u0661\u0662"}, None),
        ({"FrontOfficeTenantId": "9" * 5000}, None),
        ({}, None),
    ],
)
def test_tenant_id(payload: dict[str, object], tenant: int | None) -> None:
    body = json.dumps({"EventName": "talent_saved", **payload}).encode()
    assert parse(body).tenant_id == tenant


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not_json"),
        (b"not json", "not_json"),
        (b"\xff\xfe{}", "not_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"placement_updated"', "not_an_object"),
        (b"{}", "no_event_name"),
        (b'{"EventName": ""}', "no_event_name"),
        (b'{"EventName": 5}', "no_event_name"),
        (b'{"eventname": "talent_created"}', "no_event_name"),
        (b'{"EventName": "!!!"}', "unusable_event_name"),
        (json.dumps({"EventName": "a_" * 200}).encode(), "event_name_too_long"),
    ],
)
def test_unparseable_bodies_name_their_reason(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidEnvelope) as caught:
        parse(body)
    assert caught.value.reason == reason
