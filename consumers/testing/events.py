"""`sample`: an event as Avionté sends it, made by the simulator's own generator."""

from __future__ import annotations

from typing import Any

from service.shared.samples import DEFAULT_TENANT, made_up_event


def sample(name: str, *, tenant: int | None = None, **resource: Any) -> dict[str, Any]:
    """An event named `name` as Avionté sends it, with a fresh `CorrelationId`.

    `tenant` is its `FrontOfficeTenantId` (the simulator's tenant, 1, when None).
    `resource` goes into its `Resource`, a string holding JSON, beside the
    `CorrelationId` and a made-up id for each field the event names there
    (`PlacementId`, ...) and `resource` leaves out. Change the dict as you like
    (`DeduplicationId`, another `CorrelationId`) before delivering it.
    """
    return made_up_event(name, tenant=DEFAULT_TENANT if tenant is None else tenant, **resource)
