"""Who may prescribe, sign, read and dispense; tenant isolation; versions; audit."""

from __future__ import annotations

from tests.integration.notes.conftest import Chain, Staff

from .conftest import CLARITHROMYCIN, SIMVASTATIN, created, prescription, rx, sign


def test_roles_outside_prescribing_are_refused(chain: Chain, patient_id: str) -> None:
    for role in ("reception", "pharmacist", "lab"):
        staff = chain.staff(role, practitioner=role != "reception")
        assert rx(staff, "POST", "/fhir/MedicationRequest", prescription(patient_id)).status == 403, role
    lab = chain.staff("lab")
    assert rx(lab, "GET", "/fhir/MedicationRequest", query={"patient": patient_id}).status == 403


def test_only_the_prescriber_revises_or_signs(chain: Chain, physician: Staff, patient_id: str) -> None:
    draft = created(physician, prescription(patient_id))
    colleague = chain.staff("physician")
    assert sign(colleague, draft).status == 403
    revised = rx(colleague, "PUT", f"/fhir/MedicationRequest/{draft['id']}", prescription(patient_id),
                 headers={"If-Match": 'W/"1"'})
    assert revised.status == 403


def test_a_stale_version_is_refused_with_412(physician: Staff, patient_id: str) -> None:
    draft = created(physician, prescription(patient_id))
    first = rx(physician, "PUT", f"/fhir/MedicationRequest/{draft['id']}", prescription(patient_id, days=3),
               headers={"If-Match": 'W/"1"'})
    assert first.status == 200, first.body
    assert first.body["dosageInstruction"][0]["text"].endswith("durante 3 días")
    stale = rx(physician, "PUT", f"/fhir/MedicationRequest/{draft['id']}", prescription(patient_id, days=4),
               headers={"If-Match": 'W/"1"'})
    assert stale.status == 412
    assert sign(physician, draft).status == 412


def test_another_tenant_sees_nothing(chain: Chain, other_chain: Chain, physician: Staff, patient_id: str) -> None:
    created(physician, prescription(patient_id, SIMVASTATIN))
    draft = created(physician, prescription(patient_id, CLARITHROMYCIN))
    sign(physician, draft, reason="Motivo clínico documentado")
    outsider = other_chain.staff("physician")
    pharmacist = other_chain.staff("pharmacist")
    assert rx(outsider, "GET", f"/fhir/MedicationRequest/{draft['id']}").status == 404
    assert rx(outsider, "GET", f"/fhir/{draft['detectedIssue'][0]['reference']}").status == 404
    assert rx(outsider, "GET", f"/fhir/MedicationRequest/{draft['id']}/$print").status == 404
    assert rx(outsider, "GET", "/fhir/MedicationRequest", query={"patient": patient_id}).body["total"] == 0
    reply = rx(pharmacist, "POST", "/fhir/MedicationDispense", {
        "resourceType": "MedicationDispense",
        "authorizingPrescription": [{"reference": f"MedicationRequest/{draft['id']}"}]})
    assert reply.status == 422
    assert rx(outsider, "POST", "/fhir/MedicationRequest", prescription(patient_id)).status == 422


def test_the_patient_sees_their_own_prescriptions_and_receta_only(chain: Chain, physician: Staff,
                                                                 patient_id: str, reception: Staff) -> None:
    mine = created(physician, prescription(patient_id))
    sign(physician, mine)
    other_patient = chain.register_patient(reception)
    theirs = created(physician, prescription(other_patient))
    me = chain.patient_user(patient_id)
    assert rx(me, "GET", f"/fhir/MedicationRequest/{mine['id']}").status == 200
    assert rx(me, "GET", f"/fhir/MedicationRequest/{theirs['id']}").status == 404
    assert rx(me, "GET", f"/fhir/MedicationRequest/{mine['id']}/$print").status == 200
    listed = rx(me, "GET", "/fhir/MedicationRequest", query={"patient": other_patient})
    assert listed.body["total"] == 0
    assert rx(me, "POST", "/fhir/MedicationRequest", prescription(patient_id)).status == 403


def test_prescriptions_are_never_deleted_and_alerts_are_not_edited(physician: Staff, patient_id: str) -> None:
    created(physician, prescription(patient_id, SIMVASTATIN))
    draft = created(physician, prescription(patient_id, CLARITHROMYCIN))
    assert rx(physician, "DELETE", f"/fhir/MedicationRequest/{draft['id']}").status == 405
    assert rx(physician, "PUT", f"/fhir/{draft['detectedIssue'][0]['reference']}", {}).status == 405


def test_signing_and_overrides_are_in_the_patients_audit_trail(chain: Chain, physician: Staff,
                                                               patient_id: str) -> None:
    created(physician, prescription(patient_id, SIMVASTATIN))
    draft = created(physician, prescription(patient_id, CLARITHROMYCIN))
    assert sign(physician, draft, reason="Beneficio mayor que el riesgo").status == 200
    auditor = chain.staff("auditor", practitioner=False)
    events = auditor.admin("GET", "/fhir/AuditEvent", query={"patient": patient_id, "_count": "100"})
    assert events.status == 200, events.body
    seen = {(e["resource"]["subtype"][0]["code"], ref["what"]["reference"].split("/")[0])
            for e in events.body["entry"] for ref in e["resource"].get("entity", []) if "what" in ref}
    assert ("$sign", "MedicationRequest") in seen   # operations name themselves in AuditEvent.subtype
    assert ("$override", "DetectedIssue") in seen
    assert ("create", "MedicationRequest") in seen


def test_a_revision_that_removes_the_interaction_cancels_its_alert(physician: Staff, patient_id: str) -> None:
    created(physician, prescription(patient_id, SIMVASTATIN))
    draft = created(physician, prescription(patient_id, CLARITHROMYCIN))
    alert = draft["detectedIssue"][0]["reference"]
    revised = rx(physician, "PUT", f"/fhir/MedicationRequest/{draft['id']}", prescription(patient_id),
                 headers={"If-Match": 'W/"1"'})
    assert revised.status == 200
    assert "detectedIssue" not in revised.body
    assert revised.headers["X-Alerts"] == "0"
    assert rx(physician, "GET", f"/fhir/{alert}").body["status"] == "cancelled"
