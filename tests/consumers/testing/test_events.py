"""`sample`: events as Avionté sends them, from the generator the simulator uses."""

from __future__ import annotations

import itertools
import json

from consumers.testing import sample
from service.shared.envelope import parse
from service.shared.samples import KNOWN_EVENTS, encoded
from service.simulate import bodies


def test_a_sample_is_the_documented_envelope_with_resource_as_a_json_string() -> None:
    event = sample("placement_updated", tenant=6, PlacementId=86635)
    assert set(event) == {
        "EventName",
        "FrontOfficeTenantId",
        "Resource",
        "ResourceModelType",
        "CorrelationId",
    }
    assert isinstance(event["Resource"], str)
    resource = json.loads(event["Resource"])
    assert resource["PlacementId"] == 86635
    assert isinstance(resource["PlacementExtensionId"], int)  # the other id it shows, made up
    assert resource["CorrelationId"] == event["CorrelationId"]
    envelope = parse(encoded(event))
    assert (envelope.routing_key, envelope.tenant_id) == ("placement.updated", 6)
    assert envelope.message_id == event["CorrelationId"]


def test_each_sample_has_a_fresh_correlation_id_and_the_simulator_s_tenant_by_default() -> None:
    first, second = sample("talent_created"), sample("talent_created")
    assert first["CorrelationId"] != second["CorrelationId"]
    assert first["FrontOfficeTenantId"] == 1
    assert json.loads(sample("AcmeBenefitEvent", Id=3)["Resource"])["Id"] == 3


def test_a_sample_has_the_shape_the_simulator_sends_for_every_known_event() -> None:
    simulated = itertools.islice(bodies(KNOWN_EVENTS, None), len(KNOWN_EVENTS))
    for name, body in zip(KNOWN_EVENTS, simulated, strict=True):
        sent, made = json.loads(body), sample(name)
        assert set(made) == set(sent), name
        assert set(json.loads(made["Resource"])) == set(json.loads(sent["Resource"])), name
        assert {k: v for k, v in made.items() if k not in ("Resource", "CorrelationId")} == {
            k: v for k, v in sent.items() if k not in ("Resource", "CorrelationId")
        }
