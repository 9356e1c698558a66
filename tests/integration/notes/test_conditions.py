"""Diagnoses: WHO ICD-10 codes, one canonical form, sensitive categories labelled, the problem list."""

from __future__ import annotations

from tests.integration.notes.conftest import ICD10, Chain, Staff, condition_body


def test_mexican_and_who_spellings_store_one_canonical_code(physician: Staff, patient_id: str) -> None:
    first = physician.notes("POST", "/fhir/Condition", condition_body(patient_id, "I10X"))
    second = physician.notes("POST", "/fhir/Condition", condition_body(patient_id, "i10"))
    assert first.status == second.status == 201, first.body
    for reply in (first, second):
        coding = reply.body["code"]["coding"][0]
        assert coding["system"] == ICD10
        assert coding["code"] == "I10"
        assert coding["display"].startswith("Hipertensión esencial")
    e119 = physician.notes("POST", "/fhir/Condition", condition_body(patient_id, "E119"))
    assert e119.body["code"]["coding"][0]["code"] == "E11.9"


def test_a_code_that_does_not_exist_is_refused_naming_it(physician: Staff, patient_id: str) -> None:
    reply = physician.notes("POST", "/fhir/Condition", condition_body(patient_id, "Q99.99"))
    assert reply.status == 400
    assert "Q99.99" in reply.issue
    assert reply.body["issue"][0]["expression"] == ["Condition.code.coding[0].code"]


def test_a_category_header_is_not_a_diagnosis(physician: Staff, patient_id: str) -> None:
    reply = physician.notes("POST", "/fhir/Condition", condition_body(patient_id, "E11"))
    assert reply.status == 400
    assert "E11.9" in reply.issue


def test_sensitive_diagnoses_are_labelled(physician: Staff, patient_id: str) -> None:
    hiv = physician.notes("POST", "/fhir/Condition", condition_body(patient_id, "B24"))
    depression = physician.notes("POST", "/fhir/Condition", condition_body(patient_id, "F32.9"))
    hypertension = physician.notes("POST", "/fhir/Condition", condition_body(patient_id, "I10"))
    assert [s["code"] for s in hiv.body["meta"]["security"]] == ["HIV"]
    assert [s["code"] for s in depression.body["meta"]["security"]] == ["PSY"]
    assert "security" not in hypertension.body["meta"]


def test_problem_list_shows_active_conditions_only(physician: Staff, patient_id: str) -> None:
    active = physician.notes("POST", "/fhir/Condition", condition_body(patient_id, "E11.9")).body
    resolved = physician.notes("POST", "/fhir/Condition", condition_body(patient_id, "J18.9")).body
    closed = {**resolved, "clinicalStatus": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "resolved"}]}}
    updated = physician.notes("PUT", f"/fhir/Condition/{resolved['id']}", closed, headers={"If-Match": 'W/"1"'})
    assert updated.status == 200, updated.body
    problems = physician.notes("GET", "/fhir/Condition", query={"patient": patient_id, "clinical-status": "active"})
    assert [e["resource"]["id"] for e in problems.body["entry"]] == [active["id"]]
    old = physician.notes("GET", f"/fhir/Condition/{resolved['id']}/_history/1")
    assert old.body["clinicalStatus"]["coding"][0]["code"] == "active"


def test_a_condition_of_another_patients_encounter_is_refused(physician: Staff, patient_id: str, chain: Chain,
                                                              reception: Staff) -> None:
    other = chain.register_patient(reception)
    encounter = physician.notes("POST", "/fhir/Encounter", {
        "resourceType": "Encounter", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{other}"}}).body
    reply = physician.notes("POST", "/fhir/Condition", condition_body(
        patient_id, encounter={"reference": f"Encounter/{encounter['id']}"}))
    assert reply.status == 422
    assert "not an encounter of this patient" in reply.issue


def test_nurse_reads_but_does_not_diagnose(chain: Chain, patient_id: str) -> None:
    nurse = chain.staff("nurse")
    assert nurse.notes("POST", "/fhir/Condition", condition_body(patient_id)).status == 403
    assert nurse.notes("GET", "/fhir/Condition", query={"patient": patient_id}).status == 200


def test_conditions_are_found_by_patient_and_encounter_together(physician: Staff, patient_id: str) -> None:
    encounter = physician.notes("POST", "/fhir/Encounter", {
        "resourceType": "Encounter", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"}}).body
    linked = physician.notes("POST", "/fhir/Condition", condition_body(
        patient_id, "J18.9", encounter={"reference": f"Encounter/{encounter['id']}"})).body
    physician.notes("POST", "/fhir/Condition", condition_body(patient_id, "E11.9"))
    both = physician.notes("GET", "/fhir/Condition", query={"patient": patient_id, "encounter": encounter["id"]})
    assert [e["resource"]["id"] for e in both.body["entry"]] == [linked["id"]]
    assert both.body["entry"][0]["resource"]["category"][0]["coding"][0]["code"] == "encounter-diagnosis"


def test_a_condition_needs_an_existing_patient(physician: Staff) -> None:
    reply = physician.notes("POST", "/fhir/Condition", condition_body("nobody"))
    assert reply.status == 422 and "Patient/nobody" in reply.issue


def test_entered_in_error_has_no_clinical_status(physician: Staff, patient_id: str) -> None:
    created = physician.notes("POST", "/fhir/Condition", condition_body(patient_id)).body
    wrong = {**created, "verificationStatus": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "entered-in-error"}]}}
    refused = physician.notes("PUT", f"/fhir/Condition/{created['id']}", wrong, headers={"If-Match": 'W/"1"'})
    assert refused.status == 400 and "no clinicalStatus" in refused.issue
    wrong.pop("clinicalStatus")
    fixed = physician.notes("PUT", f"/fhir/Condition/{created['id']}", wrong, headers={"If-Match": 'W/"1"'})
    assert fixed.status == 200, fixed.body
    active = physician.notes("GET", "/fhir/Condition", query={"patient": patient_id, "clinical-status": "active"})
    assert active.body.get("entry", []) == []
