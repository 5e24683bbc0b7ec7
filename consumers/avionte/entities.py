"""From an event to the entity it names: which kind, and which id in its `Resource`.

The table follows the documented event names and the samples Avionté publishes. Where
an event's Resource may carry the id under more than one field (`company_updated`
and `contact_updated` carry `Id`; the tag and address events `CompanyId`), the fields
are tried in order. An event not in the table, one without a `Resource` (back-office
events), or one whose Resource lacks the id is an `UnmappedEvent`: never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from consumers.avionte.errors import UnmappedEvent
from consumers.event import Event

# Entities with a documented endpoint under /front-office/v1.
KINDS = ("placement", "talent", "company", "contact", "job", "department")


@dataclass(frozen=True, slots=True)
class EntityRef:
    """One entity an event names; `other` is the merged-away talent for `talent_merged`."""

    kind: str
    id: int
    other: int | None = None

    @property
    def path(self) -> str:
        return f"{self.kind}/{self.id}"


# routing key -> (kind, id fields in the order tried). From the documented names;
# the field names come from Avionté's samples, and where none shows one, the
# entity's own `<Kind>Id` is inferred, then `Id`.
EVENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "talent.created": ("talent", ("TalentId", "Id")),
    "talent.saved": ("talent", ("TalentId", "Id")),
    "talent.submitted": ("talent", ("TalentId", "Id")),
    "talent.login.created": ("talent", ("TalentId", "Id")),
    "talent.merged": ("talent", ("GoodTalentId",)),
    "contact.created": ("contact", ("ContactId", "Id")),
    "contact.updated": ("contact", ("ContactId", "Id")),
    "company.updated": ("company", ("CompanyId", "Id")),
    "company.address.created": ("company", ("CompanyId",)),
    "company.address.updated": ("company", ("CompanyId",)),
    "company.tag.added": ("company", ("CompanyId",)),
    "company.tag.deleted": ("company", ("CompanyId",)),
    "company.statuses.updated": ("company", ("CompanyId",)),
    "job.created": ("job", ("JobId", "Id")),
    "job.updated": ("job", ("JobId", "Id")),
    "job.discount.updated": ("job", ("JobId",)),
    "vms.job.created": ("job", ("JobId",)),
    "vms.job.declined": ("job", ("JobId",)),
    "placement.started": ("placement", ("PlacementId",)),
    "placement.updated": ("placement", ("PlacementId",)),
    "placement.extension.deleted": ("placement", ("PlacementId",)),
    "placement.end.reasons.updated": ("placement", ("PlacementId",)),
}


def _integer(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def entity_of(event: Event) -> EntityRef:
    """The entity `event` names; raises `UnmappedEvent` when it names none we can fetch."""
    known = EVENTS.get(event.routing_key)
    if known is None:
        raise UnmappedEvent(f"{event.name!r} names no entity with a documented endpoint")
    if event.resource is None:
        raise UnmappedEvent(f"{event.name!r} carries no Resource to take an id from")
    kind, fields = known
    for name in fields:
        found = _integer(event.resource.get(name))
        if found is not None:
            other = _integer(event.resource.get("BadTalentId")) if kind == "talent" else None
            return EntityRef(kind, found, other)
    raise UnmappedEvent(f"{event.name!r}: its Resource has none of {', '.join(fields)}")
