"""Prescriptions reuse the notes world: a chain, its clinic, staff with practitioners and signing keys, a patient."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Reply
from tests.integration.notes.conftest import (  # noqa: F401  (fixtures, requested by name)
    Chain,
    Staff,
    admin_world,
    call,
    chain,
    other_chain,
    patient_id,
    physician,
    reception,
)

UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
ORAL = "26643006"
CNIS = "urn:oid:2.16.840.1.113883.3.215.12.8"
PARACETAMOL = "010.000.0104.00"     # tableta 500 mg, 10 per package, max 4000 mg/day (sourced)
SIMVASTATIN = "010.000.4124.00"     # tableta 20 mg
CLARITHROMYCIN = "010.000.2132.00"  # tableta 250 mg
WARFARIN = "010.000.0623.00"        # tableta 5 mg
IBUPROFEN = "010.000.5941.00"       # tableta 400 mg, max 3200 mg/day (sourced)


def rx(staff: Staff, method: str, path: str, body: Any = None, **kw: Any) -> Reply:
    return call(staff.caller, "prescriptions", method, path, body, **kw)


def prescription(patient: str, key: str = PARACETAMOL, *, dose: float = 1, dose_unit: str = "{tablet}",
                 every_hours: float = 8, days: float = 5, packages: float = 2, route: str = ORAL,
                 **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest", "status": "draft", "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
        "medicationCodeableConcept": {"coding": [{"system": CNIS, "code": key}]},
        "dosageInstruction": [{
            "doseAndRate": [{"doseQuantity": {"value": dose, "unit": dose_unit, "system": UCUM, "code": dose_unit}}],
            "route": {"coding": [{"system": SNOMED, "code": route}]},
            "timing": {"repeat": {"frequency": 1, "period": every_hours, "periodUnit": "h",
                                  "boundsDuration": {"value": days, "unit": "d", "system": UCUM, "code": "d"}}},
            "patientInstruction": "Tomar con agua.",
        }],
        "dispenseRequest": {"quantity": {"value": packages, "unit": "{package}", "system": UCUM,
                                         "code": "{package}"}},
        **extra,
    }


def created(staff: Staff, body: dict[str, Any]) -> dict[str, Any]:
    reply = rx(staff, "POST", "/fhir/MedicationRequest", body)
    assert reply.status == 201, reply.body
    return dict(reply.body)


def sign(staff: Staff, resource: dict[str, Any], *, reason: str | None = None,
         headers: dict[str, str] | None = None) -> Reply:
    params: dict[str, Any] = {"resourceType": "Parameters", "parameter": []}
    if reason:
        params["parameter"].append({"name": "overrideReason", "valueString": reason})
    return rx(staff, "POST", f"/fhir/MedicationRequest/{resource['id']}/$sign", params,
              headers={"If-Match": f'W/"{resource["meta"]["versionId"]}"', **(headers or {})})


@pytest.fixture
def pharmacist(chain: Chain) -> Staff:  # noqa: F811  (the fixture)
    return chain.staff("pharmacist")


@pytest.fixture
def nurse(chain: Chain) -> Staff:  # noqa: F811  (the fixture)
    return chain.staff("nurse")
