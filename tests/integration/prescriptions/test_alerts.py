"""Alerts in more situations: proposals checked together, class and cross-class allergies, allergies that no
longer apply, alerts listed by patient, dispensations listed by prescription."""

from __future__ import annotations

from typing import Any

from tests.integration.notes.conftest import Chain, Staff

from .conftest import CLARITHROMYCIN, SIMVASTATIN, created, prescription, rx, sign

CEFALEXIN = "010.000.1939.00"   # tableta, J01DB01
AMOXICILLIN = "010.000.2128.00"  # cápsula 500 mg, J01CA04
ATC = "http://www.whocc.no/atc"


def _allergy(staff: Staff, patient: str, system: str, code: str, **extra: Any) -> dict[str, Any]:
    reply = rx(staff, "POST", "/fhir/AllergyIntolerance", {
        "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{patient}"},
        "category": ["medication"], "code": {"coding": [{"system": system, "code": code}]}, **extra})
    assert reply.status == 201, reply.body
    return dict(reply.body)


def _codes(staff: Staff, reply: Any) -> list[str]:
    return [rx(staff, "GET", f"/fhir/{ref['reference']}").body["code"]["coding"][0]["code"]
            for ref in reply.get("detectedIssue") or []]


def test_check_takes_a_bundle_and_checks_the_proposals_against_each_other(physician: Staff, patient_id: str) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": prescription(patient_id, SIMVASTATIN, every_hours=24, days=30)},
        {"resource": prescription(patient_id, CLARITHROMYCIN, every_hours=12, days=7)}]}
    reply = rx(physician, "POST", "/fhir/MedicationRequest/$check", bundle)
    assert reply.status == 200, reply.body
    assert {e["resource"]["code"]["coding"][0]["code"] for e in reply.body["entry"]} == {"DRG"}
    assert all("id" not in e["resource"] for e in reply.body["entry"])
    mixed = {**bundle, "entry": [*bundle["entry"], {"resource": prescription("someone-else")}]}
    assert rx(physician, "POST", "/fhir/MedicationRequest/$check", mixed).status in (400, 422)


def test_a_class_allergy_and_a_cross_reactive_class_raise_their_alerts(physician: Staff, patient_id: str) -> None:
    _allergy(physician, patient_id, ATC, "J01C", criticality="high")
    penicillin = created(physician, prescription(patient_id, AMOXICILLIN, every_hours=8, days=7,
                                                 dose_unit="{capsule}"))
    assert _codes(physician, penicillin) == ["ALGY"]
    cephalosporin = created(physician, prescription(patient_id, CEFALEXIN, every_hours=6, days=7))
    assert "RALG" in _codes(physician, cephalosporin)
    issue = rx(physician, "GET", f"/fhir/{cephalosporin['detectedIssue'][0]['reference']}").body
    assert any("2022 practice parameter" in e.get("valueString", "") for e in issue["extension"])


def test_an_allergy_marked_refuted_no_longer_alerts(physician: Staff, patient_id: str) -> None:
    allergy = _allergy(physician, patient_id, "https://expediente.mx/fhir/CodeSystem/dci", "amoxicillin")
    assert _codes(physician, created(physician, prescription(patient_id, AMOXICILLIN, dose_unit="{capsule}"))) == [
        "ALGY"]
    refuted = {**allergy, "verificationStatus": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "refuted"}]}}
    assert rx(physician, "PUT", f"/fhir/AllergyIntolerance/{allergy['id']}", refuted,
              headers={"If-Match": 'W/"1"'}).status == 200
    again = created(physician, prescription(patient_id, CEFALEXIN, every_hours=6, days=7))
    assert _codes(physician, again) == []


def test_a_medication_allergy_needs_a_code_the_checks_understand(physician: Staff, patient_id: str) -> None:
    reply = rx(physician, "POST", "/fhir/AllergyIntolerance", {
        "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{patient_id}"},
        "category": ["medication"], "code": {"text": "la pastilla blanca"}})
    assert reply.status == 400 and reply.body["issue"][0]["expression"] == ["AllergyIntolerance.code"]
    unknown = rx(physician, "POST", "/fhir/AllergyIntolerance", {
        "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{patient_id}"},
        "code": {"coding": [{"system": "https://expediente.mx/fhir/CodeSystem/dci", "code": "unobtainium"}]}})
    assert unknown.status == 400
    food = rx(physician, "POST", "/fhir/AllergyIntolerance", {
        "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{patient_id}"},
        "category": ["food"], "code": {"text": "Cacahuate"}})
    assert food.status == 201, food.body


def test_alerts_and_dispensations_are_listed(chain: Chain, physician: Staff, patient_id: str) -> None:
    created(physician, prescription(patient_id, SIMVASTATIN, every_hours=24, days=30))
    draft = created(physician, prescription(patient_id, CLARITHROMYCIN, every_hours=12, days=7))
    by_patient = rx(physician, "GET", "/fhir/DetectedIssue", query={"patient": patient_id})
    assert by_patient.body["total"] >= 2
    assert sign(physician, draft, reason="Indicación documentada").status == 200
    pharmacist = chain.staff("pharmacist")
    rx(pharmacist, "POST", "/fhir/MedicationDispense", {
        "resourceType": "MedicationDispense",
        "authorizingPrescription": [{"reference": f"MedicationRequest/{draft['id']}"}]})
    listed = rx(pharmacist, "GET", "/fhir/MedicationDispense", query={"prescription": draft["id"]})
    assert listed.body["total"] == 1
    assert listed.body["entry"][0]["resource"]["performer"][0]["actor"]["reference"] == (
        f"Practitioner/{pharmacist.practitioner_id}")
    active = rx(physician, "GET", "/fhir/MedicationRequest", query={"patient": patient_id, "status": "draft"})
    assert [e["resource"]["medicationReference"]["reference"] for e in active.body["entry"]] == [
        f"Medication/{SIMVASTATIN}"]


def test_a_dispensed_prescription_still_interacts_and_a_stopped_one_does_not(
        chain: Chain, physician: Staff, patient_id: str) -> None:
    simvastatin = created(physician, prescription(patient_id, SIMVASTATIN, every_hours=24, days=30, packages=1))
    signed = sign(physician, simvastatin)
    pharmacist = chain.staff("pharmacist")
    assert rx(pharmacist, "POST", "/fhir/MedicationDispense", {
        "resourceType": "MedicationDispense",
        "authorizingPrescription": [{"reference": f"MedicationRequest/{simvastatin['id']}"}]}).status == 201
    assert rx(physician, "GET", f"/fhir/MedicationRequest/{simvastatin['id']}").body["status"] == "completed"
    check = rx(physician, "POST", "/fhir/MedicationRequest/$check", prescription(patient_id, CLARITHROMYCIN))
    assert check.body["total"] >= 1  # the patient is still taking the dispensed simvastatin
    other = created(physician, prescription(patient_id, SIMVASTATIN, every_hours=24, days=30))
    version = sign(physician, other).body["meta"]["versionId"]
    stop = {"resourceType": "Parameters", "parameter": [{"name": "status", "valueCode": "stopped"},
                                                        {"name": "reason", "valueString": "Mialgias"}]}
    assert rx(physician, "POST", f"/fhir/MedicationRequest/{other['id']}/$status", stop,
              headers={"If-Match": f'W/"{version}"'}).status == 200
    implicated = {e["resource"]["implicated"][0]["reference"] for e in rx(
        physician, "POST", "/fhir/MedicationRequest/$check", prescription(patient_id, CLARITHROMYCIN)).body["entry"]
        if e["resource"].get("implicated")}
    assert implicated == {f"MedicationRequest/{simvastatin['id']}"}
    assert signed.status == 200
