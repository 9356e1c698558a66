"""A prescription over HTTP: find the medicine, prescribe, see the interaction, override and sign, print the
receta, verify it as a pharmacy without an account, and dispense it."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.e2e
UCUM = "http://unitsofmeasure.org"


def _prescription(patient: str, key: str, *, every_hours: int, days: int) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest", "status": "draft", "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
        "medicationCodeableConcept": {"coding": [{"system": "urn:oid:2.16.840.1.113883.3.215.12.8", "code": key}]},
        "dosageInstruction": [{
            "doseAndRate": [{"doseQuantity": {"value": 1, "system": UCUM, "code": "{tablet}"}}],
            "route": {"coding": [{"system": "http://snomed.info/sct", "code": "26643006"}]},
            "timing": {"repeat": {"frequency": 1, "period": every_hours, "periodUnit": "h",
                                  "boundsDuration": {"value": days, "system": UCUM, "code": "d"}}}}],
        "dispenseRequest": {"quantity": {"value": 1, "system": UCUM, "code": "{package}"}},
    }


def test_prescribe_override_sign_print_verify_and_dispense(api):
    patient = api.tenant(0).patient_ids[0]
    physician, pharmacist = api.as_user("physician"), api.as_user("pharmacist")
    found = physician.get("/fhir/Medication", params={"name": "simvastat"}).json()
    simvastatin = next(e["resource"]["id"] for e in found["entry"]
                       if e["resource"]["ingredient"][0]["strength"]["numerator"]["value"] == 20)
    clarithromycin = next(e["resource"]["id"] for e in physician.get(
        "/fhir/Medication", params={"name": "claritromicina"}).json()["entry"]
        if e["resource"]["form"]["coding"][0]["code"] == "TAB")
    first = physician.post("/fhir/MedicationRequest", json=_prescription(patient, simvastatin, every_hours=24,
                                                                         days=30))
    assert first.status_code == 201, first.text
    second = physician.post("/fhir/MedicationRequest", json=_prescription(patient, clarithromycin, every_hours=12,
                                                                          days=7))
    assert second.status_code == 201, second.text
    assert second.headers["X-Alerts"] != "0"
    draft = second.json()
    assert draft["detectedIssue"][0]["display"].startswith("contraindicated:")

    version = {"If-Match": f'W/"{draft["meta"]["versionId"]}"'}
    refused = physician.post(f"/fhir/MedicationRequest/{draft['id']}/$sign", headers=version,
                             json={"resourceType": "Parameters", "parameter": []})
    assert refused.status_code == 409
    signed = physician.post(f"/fhir/MedicationRequest/{draft['id']}/$sign", headers=version, json={
        "resourceType": "Parameters",
        "parameter": [{"name": "overrideReason", "valueString": "Simvastatina suspendida durante el antibiótico"}]})
    assert signed.status_code == 200, signed.text
    verify_url = signed.headers["X-Receta-Verify"]

    pdf = physician.get(f"/fhir/MedicationRequest/{draft['id']}/$print", headers={"Accept": "application/pdf"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")

    pharmacy = api.anonymous()
    checked = pharmacy.get(verify_url.removeprefix(api.url), headers={"Accept": "application/json"})
    assert checked.status_code == 200, checked.text
    assert checked.json()["authentic"] is True and checked.json()["dispensable"] is True
    page = pharmacy.get(verify_url.removeprefix(api.url), headers={"Accept": "text/html"})
    assert "Receta auténtica y vigente" in page.text

    dispensed = pharmacist.post("/fhir/MedicationDispense", json={
        "resourceType": "MedicationDispense",
        "authorizingPrescription": [{"reference": f"MedicationRequest/{draft['id']}"}]})
    assert dispensed.status_code == 201, dispensed.text
    after = pharmacy.get(verify_url.removeprefix(api.url)).json()
    assert after["dispensable"] is False and after["status"] == "completed"
    other = api.as_user("physician", tenant_index=1)
    assert other.get(f"/fhir/MedicationRequest/{draft['id']}").status_code == 404
