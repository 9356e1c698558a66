"""Prescribing end to end under moto: complete dosing, alerts as DetectedIssues, signing, receta, dispensing."""

from __future__ import annotations

import base64
import io

import pytest
from pypdf import PdfReader

from tests.integration.notes.conftest import Chain, Staff

from .conftest import (
    CLARITHROMYCIN,
    IBUPROFEN,
    PARACETAMOL,
    SIMVASTATIN,
    WARFARIN,
    created,
    prescription,
    rx,
    sign,
)


def test_a_complete_prescription_is_stored_as_a_draft_with_its_text(physician: Staff, patient_id: str) -> None:
    body = created(physician, prescription(patient_id))
    assert body["status"] == "draft"
    assert body["medicationReference"]["reference"] == f"Medication/{PARACETAMOL}"
    assert body["requester"]["reference"] == f"Practitioner/{physician.practitioner_id}"
    assert body["dosageInstruction"][0]["text"] == "1 tableta(s) vía oral cada 8 horas durante 5 días"
    assert "detectedIssue" not in body


@pytest.mark.parametrize(("change", "expression"), [
    (lambda b: b["dosageInstruction"][0]["timing"]["repeat"].pop("boundsDuration"),
     "MedicationRequest.dosageInstruction[0].timing.repeat.boundsDuration"),
    (lambda b: b["dosageInstruction"][0].pop("route"), "MedicationRequest.dosageInstruction[0].route"),
    (lambda b: b["dosageInstruction"][0]["route"]["coding"][0].update(code="47625008"),
     "MedicationRequest.dosageInstruction[0].route"),
    (lambda b: b["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"].update(code="mL", unit="mL"),
     "MedicationRequest.dosageInstruction[0].doseAndRate[0].doseQuantity.code"),
    (lambda b: b.pop("dispenseRequest"), "MedicationRequest.dispenseRequest.quantity"),
    (lambda b: b["dosageInstruction"][0]["timing"]["repeat"].pop("frequency"),
     "MedicationRequest.dosageInstruction[0].timing.repeat.frequency"),
    (lambda b: b.update(status="active"), "MedicationRequest.status"),
    (lambda b: b.pop("medicationCodeableConcept"), "MedicationRequest.medication[x]"),
])
def test_an_incomplete_or_inconsistent_prescription_is_refused_naming_the_field(
        physician: Staff, patient_id: str, change: object, expression: str) -> None:
    body = prescription(patient_id)
    change(body)  # type: ignore[operator]
    reply = rx(physician, "POST", "/fhir/MedicationRequest", body)
    assert reply.status == 400, reply.body
    assert reply.body["issue"][0]["expression"] == [expression]


def test_an_interaction_is_an_alert_stored_as_a_detected_issue(physician: Staff, patient_id: str) -> None:
    created(physician, prescription(patient_id, SIMVASTATIN, every_hours=24, days=30))
    reply = rx(physician, "POST", "/fhir/MedicationRequest",
               prescription(patient_id, CLARITHROMYCIN, every_hours=12, days=7))
    assert reply.status == 201
    assert reply.headers["X-Alerts"].startswith("2 (")
    refs = reply.body["detectedIssue"]
    assert all(r["display"].startswith("contraindicated:") for r in refs)
    issue = rx(physician, "GET", f"/fhir/{refs[0]['reference']}").body
    assert issue["code"]["coding"][0]["code"] == "DRG"
    assert issue["severity"] == "high"
    assert {i["reference"].split("/")[0] for i in issue["implicated"]} == {"MedicationRequest"}
    found = rx(physician, "GET", "/fhir/DetectedIssue", query={"implicated": f"MedicationRequest/{reply.body['id']}"})
    assert found.body["total"] == 2


def test_check_evaluates_without_saving(physician: Staff, patient_id: str) -> None:
    created(physician, prescription(patient_id, WARFARIN, every_hours=24, days=30))
    reply = rx(physician, "POST", "/fhir/MedicationRequest/$check", prescription(patient_id, IBUPROFEN))
    assert reply.status == 200, reply.body
    assert reply.body["total"] >= 1
    assert any(e["resource"]["code"]["coding"][0]["code"] == "DRG" for e in reply.body["entry"])
    listed = rx(physician, "GET", "/fhir/MedicationRequest", query={"patient": patient_id})
    assert listed.body["total"] == 1


def test_a_dose_above_the_daily_maximum_is_a_major_alert(physician: Staff, patient_id: str) -> None:
    reply = rx(physician, "POST", "/fhir/MedicationRequest",
               prescription(patient_id, PARACETAMOL, dose=2, every_hours=4))  # 6 g/day
    assert reply.status == 201
    assert reply.body["detectedIssue"][0]["display"].startswith("major:")
    assert "6000 mg" in reply.body["detectedIssue"][0]["display"]


def test_duplicate_therapy_is_flagged(physician: Staff, patient_id: str) -> None:
    created(physician, prescription(patient_id, PARACETAMOL))
    reply = rx(physician, "POST", "/fhir/MedicationRequest", prescription(patient_id, PARACETAMOL))
    issue = rx(physician, "GET", f"/fhir/{reply.body['detectedIssue'][0]['reference']}").body
    assert issue["code"]["coding"][0]["code"] == "DUPTHPGEN"


def test_allergy_and_cross_class_allergy_alerts(physician: Staff, patient_id: str) -> None:
    allergy = rx(physician, "POST", "/fhir/AllergyIntolerance", {
        "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{patient_id}"},
        "criticality": "high", "category": ["medication"],
        "code": {"coding": [{"system": "https://expediente.mx/fhir/CodeSystem/dci", "code": "ibuprofen"}],
                 "text": "Ibuprofeno"}})
    assert allergy.status == 201, allergy.body
    direct = rx(physician, "POST", "/fhir/MedicationRequest", prescription(patient_id, IBUPROFEN))
    issue = rx(physician, "GET", f"/fhir/{direct.body['detectedIssue'][0]['reference']}").body
    assert issue["code"]["coding"][0]["code"] == "ALGY"
    assert direct.body["detectedIssue"][0]["display"].startswith("contraindicated:")


def test_signing_needs_an_override_reason_for_blocking_alerts_and_audits_it(
        physician: Staff, patient_id: str, chain: Chain) -> None:
    created(physician, prescription(patient_id, SIMVASTATIN, every_hours=24, days=30))
    draft = created(physician, prescription(patient_id, CLARITHROMYCIN, every_hours=12, days=7))
    refused = sign(physician, draft)
    assert refused.status == 409
    assert "override" in refused.issue
    signed = sign(physician, draft, reason="Neumonía; simvastatina suspendida durante el tratamiento")
    assert signed.status == 200, signed.body
    assert signed.body["status"] == "active"
    assert signed.headers["X-Provenance"].startswith("Provenance/")
    issue = rx(physician, "GET", f"/fhir/{signed.body['detectedIssue'][0]['reference']}").body
    assert issue["mitigation"][0]["action"]["text"].startswith("Neumonía")
    again = rx(physician, "PUT", f"/fhir/MedicationRequest/{draft['id']}", prescription(patient_id),
               headers={"If-Match": 'W/"2"'})
    assert again.status == 409
    verified = rx(physician, "GET", f"/fhir/MedicationRequest/{draft['id']}/$verify-signature")
    assert verified.body["parameter"][0]["valueBoolean"] is True


def test_the_receta_prints_and_a_pharmacy_verifies_and_dispenses(
        physician: Staff, pharmacist: Staff, patient_id: str) -> None:
    brand = {"url": "https://expediente.mx/fhir/StructureDefinition/nombre-comercial", "valueString": "Tempra"}
    draft = created(physician, prescription(patient_id, PARACETAMOL, packages=1, extension=[brand]))
    signed = sign(physician, draft)
    assert signed.status == 200, signed.body
    pdf = rx(physician, "GET", f"/fhir/MedicationRequest/{draft['id']}/$print",
             headers={"Accept": "application/pdf"})
    assert pdf.status == 200
    raw = base64.b64decode(pdf.body)
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(raw)).pages)
    assert "PARACETAMOL" in text and "(Tempra)" in text
    practitioner = physician.admin("GET", f"/fhir/Practitioner/{physician.practitioner_id}").body
    assert f"Céd. Prof. {practitioner['identifier'][0]['value']}" in text
    url = signed.headers["X-Receta-Verify"]
    token = url.rsplit("/", 1)[1]
    public = rx(pharmacist, "GET", f"/receta/{token}")
    assert public.status == 200, public.body
    assert public.body["authentic"] is True and public.body["dispensable"] is True
    dispensed = rx(pharmacist, "POST", "/fhir/MedicationDispense", {
        "resourceType": "MedicationDispense",
        "authorizingPrescription": [{"reference": f"MedicationRequest/{draft['id']}"}]})
    assert dispensed.status == 201, dispensed.body
    assert dispensed.headers["X-Dispensations-Remaining"] == "0"
    again = rx(pharmacist, "POST", "/fhir/MedicationDispense", {
        "resourceType": "MedicationDispense",
        "authorizingPrescription": [{"reference": f"MedicationRequest/{draft['id']}"}]})
    assert again.status == 409
    assert "fully dispensed" in again.issue or "completed" in again.issue
    after = rx(pharmacist, "GET", f"/receta/{token}").body
    assert after["dispensable"] is False and after["dispensations"]["done"] == 1


def test_an_unsigned_prescription_is_not_dispensed(physician: Staff, pharmacist: Staff, patient_id: str) -> None:
    draft = created(physician, prescription(patient_id))
    reply = rx(pharmacist, "POST", "/fhir/MedicationDispense", {
        "resourceType": "MedicationDispense",
        "authorizingPrescription": [{"reference": f"MedicationRequest/{draft['id']}"}]})
    assert reply.status == 409
    assert "not signed" in reply.issue


def test_a_blocked_signature_is_not_remembered_by_its_idempotency_key(physician: Staff, patient_id: str) -> None:
    created(physician, prescription(patient_id, SIMVASTATIN, every_hours=24, days=30))
    draft = created(physician, prescription(patient_id, CLARITHROMYCIN, every_hours=12, days=7))
    key = {"Idempotency-Key": "sign-once-123"}
    assert sign(physician, draft, headers=key).status == 409
    signed = sign(physician, draft, reason="Riesgo aceptado y documentado", headers=key)
    assert signed.status == 200, signed.body
    replay = sign(physician, draft, reason="Riesgo aceptado y documentado", headers=key)
    assert replay.status == 200 and replay.headers.get("Idempotent-Replayed") == "true"


def test_requests_signatures_and_overrides_are_measured_without_ids(physician: Staff, patient_id: str,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import json

    created(physician, prescription(patient_id, SIMVASTATIN, every_hours=24, days=30))
    draft = created(physician, prescription(patient_id, CLARITHROMYCIN, every_hours=12, days=7))
    capsys.readouterr()
    assert sign(physician, draft, reason="Riesgo aceptado y documentado").status == 200
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    by_action = {line["action"]: line for line in lines}
    assert by_action["POST /fhir/MedicationRequest/<resource_id>/\\$sign"]["Requests"] == [1.0]
    assert by_action["PrescriptionsSigned"]["PrescriptionsSigned"] == [1.0]
    assert by_action["PrescriptionAlertsOverridden"]["PrescriptionAlertsOverridden"] == [2.0]
    assert not [line for line in lines if draft["id"] in json.dumps(line) or patient_id in json.dumps(line)]
