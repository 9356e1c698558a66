"""Encounters: opened at one of the user's clinics for an existing patient, with a status lifecycle."""

from __future__ import annotations

from tests.integration.notes.conftest import CLUES, Chain, Staff, encounter_body


def test_physician_opens_an_ambulatory_encounter_at_their_clinic(physician: Staff, patient_id: str,
                                                                  chain: Chain) -> None:
    reply = physician.notes("POST", "/fhir/Encounter", encounter_body(patient_id))
    assert reply.status == 201, reply.body
    assert reply.headers["ETag"] == 'W/"1"'
    assert reply.headers["Location"].endswith(f"/fhir/Encounter/{reply.body['id']}/_history/1")
    encounter = reply.body
    assert encounter["serviceProvider"] == {"reference": f"Organization/{chain.clinic_id}",
                                            "identifier": {"system": "urn:oid:2.16.840.1.113883.4.631",
                                                           "value": CLUES}}
    assert encounter["participant"][0]["individual"]["reference"] == f"Practitioner/{physician.practitioner_id}"
    assert encounter["period"]["start"]


def test_encounter_for_a_missing_patient_is_refused(physician: Staff) -> None:
    reply = physician.notes("POST", "/fhir/Encounter", encounter_body("nobody"))
    assert reply.status == 422
    assert "Patient/nobody" in reply.issue


def test_encounter_class_must_be_ambulatory_emergency_or_inpatient(physician: Staff, patient_id: str) -> None:
    body = encounter_body(patient_id)
    body["class"]["code"] = "HH"
    reply = physician.notes("POST", "/fhir/Encounter", body)
    assert reply.status == 400
    assert reply.body["issue"][0]["expression"] == ["Encounter.class"]


def test_encounter_at_a_clinic_that_is_not_the_users_is_forbidden(physician: Staff, patient_id: str) -> None:
    body = encounter_body(patient_id, serviceProvider={"identifier": {
        "system": "urn:oid:2.16.840.1.113883.4.631", "value": "HGIMB000163"}})
    reply = physician.notes("POST", "/fhir/Encounter", body)
    assert reply.status == 403
    assert "HGIMB000163" in reply.issue


def test_status_moves_only_along_the_lifecycle(physician: Staff, patient_id: str) -> None:
    created = physician.notes("POST", "/fhir/Encounter", encounter_body(patient_id, status="arrived")).body
    eid = created["id"]
    body = {**created, "status": "in-progress"}
    moved = physician.notes("PUT", f"/fhir/Encounter/{eid}", body, headers={"If-Match": 'W/"1"'})
    assert moved.status == 200, moved.body
    back = physician.notes("PUT", f"/fhir/Encounter/{eid}", {**moved.body, "status": "arrived"},
                           headers={"If-Match": 'W/"2"'})
    assert back.status == 409
    assert "allowed: entered-in-error, finished, onleave" in back.issue
    done = physician.notes("PUT", f"/fhir/Encounter/{eid}", {**moved.body, "status": "finished"},
                           headers={"If-Match": 'W/"2"'})
    assert done.status == 200
    assert done.body["period"]["end"]
    again = physician.notes("PUT", f"/fhir/Encounter/{eid}", {**done.body, "status": "in-progress"},
                            headers={"If-Match": 'W/"3"'})
    assert again.status == 409
    history = physician.notes("GET", f"/fhir/Encounter/{eid}/_history")
    assert [e["resource"]["status"] for e in history.body["entry"]] == ["finished", "in-progress", "arrived"]


def test_finished_inpatient_stay_needs_the_discharge_date(physician: Staff, patient_id: str) -> None:
    created = physician.notes("POST", "/fhir/Encounter", encounter_body(patient_id, cls="IMP")).body
    reply = physician.notes("PUT", f"/fhir/Encounter/{created['id']}", {**created, "status": "finished"},
                            headers={"If-Match": 'W/"1"'})
    assert reply.status == 400
    assert "discharge" in reply.issue
    period = {**created["period"], "end": "2030-01-02T10:00:00Z"}
    ok = physician.notes("PUT", f"/fhir/Encounter/{created['id']}",
                         {**created, "status": "finished", "period": period}, headers={"If-Match": 'W/"1"'})
    assert ok.status == 200, ok.body


def test_update_needs_the_current_version(physician: Staff, patient_id: str) -> None:
    created = physician.notes("POST", "/fhir/Encounter", encounter_body(patient_id)).body
    missing = physician.notes("PUT", f"/fhir/Encounter/{created['id']}", created)
    assert missing.status == 428
    stale = physician.notes("PUT", f"/fhir/Encounter/{created['id']}", created, headers={"If-Match": 'W/"7"'})
    assert stale.status == 412


def test_a_patients_encounters_are_listed_newest_first_and_paged(physician: Staff, patient_id: str) -> None:
    ids = []
    for day in ("2026-01-05", "2026-03-01", "2026-02-10"):
        reply = physician.notes("POST", "/fhir/Encounter",
                                encounter_body(patient_id, period={"start": f"{day}T09:00:00Z"}))
        ids.append((day, reply.body["id"]))
    newest_first = [i for _, i in sorted(ids, reverse=True)]
    page = physician.notes("GET", "/fhir/Encounter", query={"patient": patient_id, "_count": "2"})
    assert [e["resource"]["id"] for e in page.body["entry"]] == newest_first[:2]
    next_url = next(link["url"] for link in page.body["link"] if link["relation"] == "next")
    token = next_url.split("_page=")[1].split("&")[0]
    rest = physician.notes("GET", "/fhir/Encounter", query={"patient": patient_id, "_count": "2", "_page": token})
    assert [e["resource"]["id"] for e in rest.body["entry"]] == newest_first[2:]
    by_date = physician.notes("GET", "/fhir/Encounter", query={"patient": patient_id, "date": "ge2026-02"})
    assert {e["resource"]["id"] for e in by_date.body["entry"]} == set(newest_first[:2])
    by_clinic = physician.notes("GET", "/fhir/Encounter", query={"service-provider": CLUES, "status": "in-progress"})
    assert {e["resource"]["id"] for e in by_clinic.body["entry"]} == set(newest_first)


def test_search_without_a_key_parameter_is_refused(physician: Staff) -> None:
    reply = physician.notes("GET", "/fhir/Encounter", query={"status": "finished"})
    assert reply.status == 400
    assert "patient" in reply.issue


def test_another_chains_encounter_does_not_exist(physician: Staff, patient_id: str, other_chain: Chain) -> None:
    created = physician.notes("POST", "/fhir/Encounter", encounter_body(patient_id)).body
    stranger = other_chain.staff("physician")
    assert stranger.notes("GET", f"/fhir/Encounter/{created['id']}").status == 404
    listed = stranger.notes("GET", "/fhir/Encounter", query={"patient": patient_id})
    assert listed.body.get("entry", []) == []


def test_encounters_are_never_deleted(physician: Staff, patient_id: str) -> None:
    created = physician.notes("POST", "/fhir/Encounter", encounter_body(patient_id)).body
    reply = physician.notes("DELETE", f"/fhir/Encounter/{created['id']}")
    assert reply.status == 405
    assert physician.notes("GET", f"/fhir/Encounter/{created['id']}").status == 200


def test_encounters_are_found_by_patient_and_practitioner_together(physician: Staff, patient_id: str,
                                                                   chain: Chain) -> None:
    mine = physician.notes("POST", "/fhir/Encounter", encounter_body(patient_id)).body
    colleague = chain.staff("physician")
    colleague.notes("POST", "/fhir/Encounter", encounter_body(patient_id))
    both = physician.notes("GET", "/fhir/Encounter", query={"patient": patient_id,
                                                            "practitioner": physician.practitioner_id or ""})
    assert [e["resource"]["id"] for e in both.body["entry"]] == [mine["id"]]
