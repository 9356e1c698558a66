"""Laboratory result rules without AWS: what a result must carry, and the flag from its range."""

from __future__ import annotations

from typing import Any

import pytest

from expediente.errors import Invalid
from functions.results import laboratory

UCUM = laboratory.UCUM


def q(value: float, unit: str = "mmol/L") -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def body(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
            "subject": {"reference": "Patient/p1"}, **extra}


@pytest.mark.parametrize(("resource", "where"), [
    (body(), "Observation.value[x]"),
    (body(valueQuantity=q(4), valueString="4"), "Observation.valueString"),
    (body(valueBoolean=True), "Observation.valueBoolean"),
    (body(valueQuantity={"value": 4, "system": UCUM}), "Observation.valueQuantity.code"),
    (body(valueQuantity={"value": "4", "system": UCUM, "code": "mmol/L"}), "Observation.valueQuantity.value"),
    (body(valueQuantity={**q(4), "comparator": "~"}), "Observation.valueQuantity.comparator"),
    (body(valueQuantity=q(4), referenceRange=[{"low": q(35, "mg/dL")}]), "Observation.referenceRange[0].low.code"),
    (body(valueQuantity=q(4), referenceRange=[{"low": q(5.1), "high": q(3.5)}]), "Observation.referenceRange[0].low"),
    (body(valueQuantity=q(4), interpretation=[{"coding": [{"system": laboratory.INTERPRETATION, "code": "Q"}]}]),
     "Observation.interpretation"),
    (body(valueQuantity=q(4), dataAbsentReason={"text": "hemolizada"}), "Observation.dataAbsentReason"),
    ({**body(valueQuantity=q(4)), "code": {"coding": [{"system": "http://loinc.org", "code": "24323-8"}]}},
     "Observation.code.coding[0].code"),
])
def test_a_result_that_breaks_a_rule_is_refused_naming_the_element(resource: dict[str, Any], where: str) -> None:
    with pytest.raises(Invalid) as refused:
        laboratory.normalize(resource)
    assert refused.value.expression == where


def test_a_result_is_written_canonically_and_flagged_from_its_range() -> None:
    resource = laboratory.normalize(body(valueQuantity={"value": 5.6, "system": UCUM, "code": "mmol/L"},
                                         referenceRange=[{"low": q(3.5), "high": q(5.1)}]))
    assert resource["code"]["coding"][0]["display"] == "Potassium [Moles/volume] in Serum or Plasma"
    assert resource["valueQuantity"]["unit"] == "mmol/L"
    assert laboratory.range_flag(resource) == "H"
    assert laboratory.range_flag({**resource, "valueQuantity": q(3.4)}) == "L"
    assert laboratory.range_flag({**resource, "valueQuantity": q(4.0)}) == "N"
    assert laboratory.range_flag({**resource, "valueQuantity": {**q(0.5), "comparator": "<"}}) is None
    absent = laboratory.normalize(body(dataAbsentReason={"text": "muestra hemolizada"}))
    assert laboratory.value_of(absent) is None
