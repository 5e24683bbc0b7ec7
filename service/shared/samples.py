"""Avionté-shaped events, made up: what the simulator sends and `consumers.testing.sample` builds.

One generator for both, so a test's event and a simulated delivery never differ in
shape: the front-office envelope, `Resource` as a string holding JSON (the ids below
plus the `CorrelationId`), and a fresh `CorrelationId` each time.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

KNOWN_EVENTS = (
    "talent_created", "talent_saved", "talent_merged", "talent_submitted", "talent_login_created",
    "contact_created", "contact_updated",
    "company_updated", "company_address_created", "company_address_updated", "company_tag_added",
    "company_tag_deleted", "company_statuses_updated",
    "branch_created",
    "job_created", "job_updated", "job_discount_updated", "VMS_job_created", "VMS_job_declined",
    "placement_started", "placement_updated", "placement_extension_deleted",
    "placement_end_reasons_updated",
    "skillpositions_saved",
)  # fmt: skip
# A generated event's ids, where Avionté shows them: its samples (tests/fixtures/avionte),
# and its note that VMS_job_created carries JobId. Any other known event carries its
# entity's `<Kind>Id`, like the documented `{"PlacementId":86635, ...}`.
# `consumers.avionte` reads the same fields.
SHOWN_IDS: dict[str, tuple[str, ...]] = {
    "talent_created": ("Id",),
    "talent_merged": ("GoodTalentId", "BadTalentId"),
    "contact_updated": ("Id",),
    "company_updated": ("Id",),
    "company_address_created": ("CompanyId", "AddressId"),
    "placement_started": ("PlacementId", "PlacementExtensionId", "JobId"),
    "placement_updated": ("PlacementId", "PlacementExtensionId"),
    "VMS_job_created": ("JobId",),
    "VMS_job_declined": ("JobId",),
}
# The tenant of a generated event that names none.
DEFAULT_TENANT = 1
RESOURCE_MODEL_TYPE = "Avionte.Commons.CompasEventModel.ResourceModel"


def resource_ids(event_name: str) -> tuple[str, ...]:
    """The id fields a generated `event_name` carries in its Resource."""
    if event_name in SHOWN_IDS:
        return SHOWN_IDS[event_name]
    if event_name in KNOWN_EVENTS:
        return (f"{event_name.split('_')[0].capitalize()}Id",)
    return ("Id",)


def made_up_event(name: str, *, tenant: int = DEFAULT_TENANT, **resource: Any) -> dict[str, Any]:
    """An event named `name` as Avionté sends it, with a fresh CorrelationId.

    Its Resource holds `resource`, and a random id for each field of `resource_ids` not
    in it.
    """
    correlation_id = str(uuid.uuid4())
    ids = {
        field: random.randint(1, 10**6)  # noqa: S311 - made-up ids, not secrets
        for field in resource_ids(name)
        if field not in resource
    }
    return {
        "EventName": name,
        "FrontOfficeTenantId": tenant,
        "Resource": json.dumps({**ids, **resource, "CorrelationId": correlation_id}),
        "ResourceModelType": RESOURCE_MODEL_TYPE,
        "CorrelationId": correlation_id,
    }


def encoded(event: dict[str, Any]) -> bytes:
    """The body of a delivery of `event`, as the simulator posts it."""
    return json.dumps(event).encode()
