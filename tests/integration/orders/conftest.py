"""Orders reuse the notes world: a chain, its clinic, staff with practitioners, a patient and a visit."""

from __future__ import annotations

from typing import Any

from tests.integration.notes.conftest import (  # noqa: F401  (fixtures, requested by name)
    admin_world,
    chain,
    other_chain,
    patient_id,
    physician,
    reception,
    visit,
)

SNOMED = "http://snomed.info/sct"


def lab_order(patient: str, encounter: str, code: str = "2823-3", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "intent": "order",
            "category": [{"coding": [{"system": SNOMED, "code": "108252007"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{patient}"}, "encounter": {"reference": f"Encounter/{encounter}"},
            "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10X"}]}], **extra}


def imaging_order(patient: str, encounter: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "intent": "order",
            "category": [{"coding": [{"system": SNOMED, "code": "363679005"}]}],
            "code": {"text": "Radiografía de tórax PA"},
            "orderDetail": [{"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "DX"}]}],
            "bodySite": [{"text": "Tórax"}],
            "subject": {"reference": f"Patient/{patient}"}, "encounter": {"reference": f"Encounter/{encounter}"},
            "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "J18.9"}]}], **extra}
