"""Vital-signs Observations end to end through the results handler, under moto."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import boto3
import pytest

from expediente import records
from expediente.context import TenantId
from tests.integration.results.conftest import (
    CATEGORY_SYSTEM,
    LOINC,
    UCUM,
    blood_pressure,
    quantity,
    vital,
)
from tests.support.aws import REGION, User, table_name

# (LOINC code, a plausible value, its UCUM unit)
SINGLE_VITAL_SIGNS = [
    ("8310-5", 36.8, "Cel"),
    ("8867-4", 72, "/min"),
    ("9279-1", 16, "/min"),
    ("29463-7", 70.5, "kg"),
    ("8302-2", 172, "cm"),
    ("39156-5", 23.8, "kg/m2"),
    ("59408-5", 97, "%"),
]


def _at(minutes_ago: int) -> str:
    moment = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _audit_items() -> list[dict]:
    table = boto3.resource("dynamodb", region_name=REGION).Table(table_name("audit"))
    return table.scan()["Items"]  # test-only inspection of the moto table


def _ids(reply) -> list[str]:
    return [e["resource"]["id"] for e in reply.body.get("entry", [])]


# -- recording -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "value", "unit"), SINGLE_VITAL_SIGNS)
def test_nurse_records_each_vital_sign(nurse, patient, code, value, unit):
    reply = nurse.create(vital(code, value, unit, patient))
    assert reply.status == 201, reply.body
    observation = reply.body
    assert reply.headers["ETag"] == 'W/"1"'
    assert reply.headers["Location"].endswith(f"/fhir/Observation/{observation['id']}/_history/1")
    assert observation["status"] == "final"
    assert observation["category"][0]["coding"][0] == {"system": CATEGORY_SYSTEM, "code": "vital-signs",
                                                       "display": "Vital Signs"}
    assert observation["code"]["coding"][0]["system"] == LOINC
    assert observation["code"]["coding"][0]["code"] == code
    assert observation["valueQuantity"]["value"] == value
    assert observation["valueQuantity"]["system"] == UCUM and observation["valueQuantity"]["code"] == unit
    assert observation["performer"] == [{"reference": "Practitioner/nurse-practitioner-1"}]
    assert observation["effectiveDateTime"] and observation["issued"]


def test_blood_pressure_is_recorded_as_a_panel_with_both_components(nurse, patient):
    reply = nurse.create(blood_pressure(patient, 118, 76))
    assert reply.status == 201, reply.body
    components = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in reply.body["component"]}
    assert components == {
        "8480-6": {"value": 118, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        "8462-4": {"value": 76, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
    }
    assert "valueQuantity" not in reply.body
    assert reply.body["code"]["coding"][0]["code"] == "85354-9"


def test_physician_records_a_preliminary_vital_sign_with_the_time_it_was_measured(as_role, patient):
    physician = as_role("physician", practitioner_id="physician-1")
    measured = "2026-01-15T09:30:00-06:00"
    reply = physician.create(vital("8867-4", 88, "/min", patient, status="preliminary", effectiveDateTime=measured))
    assert reply.status == 201, reply.body
    assert reply.body["status"] == "preliminary"
    assert reply.body["effectiveDateTime"] == measured
    assert reply.body["performer"] == [{"reference": "Practitioner/physician-1"}]


def test_the_performer_is_the_recording_user_not_what_the_body_claims(nurse, patient):
    body = vital("8867-4", 70, "/min", patient, performer=[{"reference": "Practitioner/someone-else"}])
    reply = nurse.create(body)
    assert reply.status == 201, reply.body
    assert reply.body["performer"] == [{"reference": "Practitioner/nurse-practitioner-1"}]


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        (lambda p: vital("8310-5", 98.6, "[degF]", p), "Observation.valueQuantity.code"),
        (lambda p: vital("29463-7", 70500, "g", p), "Observation.valueQuantity.code"),
        (lambda p: vital("8310-5", 375, "Cel", p), "Observation.valueQuantity.value"),
        (lambda p: vital("8867-4", 0, "/min", p), "Observation.valueQuantity.value"),
        (lambda p: vital("59408-5", 101, "%", p), "Observation.valueQuantity.value"),
        (lambda p: {**vital("8867-4", 70, "/min", p), "valueQuantity": {"value": 70, "unit": "/min"}},
         "Observation.valueQuantity.code"),
        (lambda p: {**vital("8867-4", 70, "/min", p), "valueQuantity": {**quantity(70, "/min"),
                                                                        "system": "http://example.org/units"}},
         "Observation.valueQuantity.system"),
        (lambda p: {k: v for k, v in vital("8867-4", 70, "/min", p).items() if k != "valueQuantity"},
         "Observation.valueQuantity"),
        # 11506-3 is a real LOINC code (progress note): neither a vital sign nor a laboratory test
        (lambda p: vital("11506-3", 90, "mg/dL", p), "Observation.code.coding[0].code"),
        (lambda p: {**vital("8867-4", 70, "/min", p), "code": {"text": "pulse"}}, "Observation.code"),
        (lambda p: vital("8480-6", 120, "mm[Hg]", p), "Observation.code.coding[0].code"),
        (lambda p: {**blood_pressure(p), "component": blood_pressure(p)["component"][:1]}, "Observation.component"),
        (lambda p: blood_pressure(p, 120, 120), "Observation.component[1].valueQuantity.value"),
        (lambda p: blood_pressure(p, 90, 110), "Observation.component[1].valueQuantity.value"),
        (lambda p: blood_pressure(p, 120, 80, valueQuantity=quantity(120, "mm[Hg]")), "Observation.valueQuantity"),
        (lambda p: blood_pressure(p, 400, 80), "Observation.component[0].valueQuantity.value"),
        (lambda p: vital("8867-4", 70, "/min", p, effectiveDateTime="2026-01-15"), "Observation.effectiveDateTime"),
        (lambda p: vital("8867-4", 70, "/min", p, effectiveDateTime=(datetime.now(UTC) + timedelta(hours=2))
                         .isoformat(timespec="seconds")), "Observation.effectiveDateTime"),
        (lambda p: vital("8867-4", 70, "/min", p, category=[{"coding": [{"system": CATEGORY_SYSTEM,
                                                                        "code": "imaging"}]}]),
         "Observation.category[0]"),
        # heart rate filed as a laboratory result: the laboratory catalogue does not hold it
        (lambda p: vital("8867-4", 70, "/min", p, category=[{"coding": [{"system": CATEGORY_SYSTEM,
                                                                        "code": "laboratory"}]}]),
         "Observation.code.coding[0].code"),
        (lambda p: vital("8867-4", 70, "/min", p, status="registered"), "Observation.status"),
    ],
    ids=["fahrenheit", "grams", "temperature-out-of-range", "heart-rate-zero", "spo2-over-100", "no-unit-code",
         "other-unit-system", "no-value", "unknown-loinc", "no-loinc", "systolic-alone", "panel-without-diastolic",
         "diastolic-equal-systolic", "diastolic-above-systolic", "panel-with-value", "systolic-out-of-range",
         "date-without-time", "in-the-future", "unsupported-category", "vital-sign-as-laboratory", "unknown-status"],
)
def test_an_implausible_or_miscoded_vital_sign_is_rejected_naming_the_element(nurse, patient, body, expression):
    reply = nurse.create(body(patient))
    assert reply.status == 400, reply.body
    assert reply.body["resourceType"] == "OperationOutcome"
    assert reply.body["issue"][0]["expression"] == [expression]
    assert nurse.search(patient=patient).body["entry"] == []


def test_a_new_observation_cannot_start_as_a_correction(nurse, patient):
    reply = nurse.create(vital("8867-4", 70, "/min", patient, status="corrected"))
    assert reply.status == 422
    assert reply.body["issue"][0]["expression"] == ["Observation.status"]


def test_a_missing_patient_is_unprocessable(nurse, clinic_a):
    reply = nurse.create(vital("8867-4", 70, "/min", "no-such-patient"))
    assert reply.status == 422
    assert reply.body["issue"][0]["expression"] == ["Observation.subject"]


def test_another_tenants_patient_is_unprocessable(nurse, clinic_b):
    elsewhere = clinic_b.patient()
    reply = nurse.create(vital("8867-4", 70, "/min", elsewhere))
    assert reply.status == 422
    assert "does not exist" in reply.issue


def test_an_encounter_of_another_patient_is_unprocessable(nurse, clinic_a, patient):
    other = clinic_a.patient()
    encounter = clinic_a.encounter(other)
    reply = nurse.create(vital("8867-4", 70, "/min", patient, encounter={"reference": f"Encounter/{encounter}"}))
    assert reply.status == 422
    assert reply.body["issue"][0]["expression"] == ["Observation.encounter"]


def test_a_missing_encounter_is_unprocessable(nurse, patient):
    reply = nurse.create(vital("8867-4", 70, "/min", patient, encounter={"reference": "Encounter/nothing-here"}))
    assert reply.status == 422
    assert reply.body["issue"][0]["expression"] == ["Observation.encounter"]


def test_an_observation_of_the_patients_encounter_is_found_by_encounter(nurse, clinic_a, patient):
    encounter = clinic_a.encounter(patient)
    during = nurse.create(vital("8310-5", 37.2, "Cel", patient, encounter={"reference": f"Encounter/{encounter}"}))
    assert during.status == 201, during.body
    nurse.create(vital("8310-5", 36.5, "Cel", patient))  # outside the encounter
    assert _ids(nurse.search(encounter=encounter)) == [during.body["id"]]
    assert _ids(nurse.search(patient=patient, encounter=f"Encounter/{encounter}")) == [during.body["id"]]


def test_a_retried_post_with_the_same_idempotency_key_records_once(nurse, patient):
    body = vital("8867-4", 70, "/min", patient)
    first = nurse.create(body, headers={"Idempotency-Key": "vitals-0001"})
    again = nurse.create(body, headers={"Idempotency-Key": "vitals-0001"})
    assert first.status == again.status == 201
    assert again.body["id"] == first.body["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert len(nurse.search(patient=patient).body["entry"]) == 1


# -- who may read and write ------------------------------------------------------------------------


def test_reception_may_neither_record_nor_read_observations(nurse, as_role, patient):
    oid = nurse.create(vital("8867-4", 70, "/min", patient)).body["id"]
    reception = as_role("reception")
    assert reception.create(vital("8867-4", 70, "/min", patient)).status == 403
    assert reception.read(oid).status == 403
    assert reception.search(patient=patient).status == 403


@pytest.mark.parametrize("role", ["pharmacist", "lab", "radiology"])
def test_read_only_roles_read_but_do_not_record(nurse, as_role, patient, role):
    oid = nurse.create(vital("8867-4", 70, "/min", patient)).body["id"]
    reader = as_role(role)
    assert reader.read(oid).status == 200
    assert reader.create(vital("8867-4", 71, "/min", patient)).status == 403
    assert reader.update(oid, vital("8867-4", 71, "/min", patient, status="corrected"), 1).status == 403


def test_the_patient_reads_only_their_own_observations(nurse, clinic_a, patient):
    other = clinic_a.patient()
    mine = nurse.create(vital("8867-4", 70, "/min", patient)).body["id"]
    theirs = nurse.create(vital("8867-4", 90, "/min", other)).body["id"]
    me = clinic_a.as_role("patient", patient_id=patient)
    assert me.read(mine).status == 200
    assert me.vread(mine, 1).status == 200
    for reply in (me.read(theirs), me.vread(theirs, 1), me.history(theirs)):
        assert reply.status == 404
    assert _ids(me.search(patient=patient)) == [mine]
    assert _ids(me.search(code="8867-4")) == [mine]
    assert _ids(me.search(patient=other)) == []
    assert _ids(me.search(subject=f"Patient/{other}")) == []
    assert me.create(vital("8867-4", 70, "/min", patient)).status == 403


def test_another_tenants_observation_answers_404(nurse, clinic_b, patient):
    oid = nurse.create(vital("8867-4", 70, "/min", patient)).body["id"]
    outsider = clinic_b.as_role("nurse")
    for reply in (outsider.read(oid), outsider.vread(oid, 1), outsider.history(oid),
                  outsider.update(oid, vital("8867-4", 70, "/min", patient, status="corrected"), 1)):
        assert reply.status == 404, reply.body
    assert _ids(outsider.search(patient=patient)) == []


# -- search -----------------------------------------------------------------------------------------


def test_search_by_patient_lists_newest_measurement_first_in_pages(nurse, patient):
    created = [nurse.create(vital("8867-4", 60 + i, "/min", patient, effectiveDateTime=_at(minutes)))
               .body["id"] for i, minutes in enumerate((30, 10, 20))]
    first = nurse.search(patient=patient, _count="2")
    assert first.status == 200
    assert _ids(first) == [created[1], created[2]]
    next_url = next(link["url"] for link in first.body["link"] if link["relation"] == "next")
    page = parse_qs(urlparse(next_url).query)
    second = nurse.search(patient=patient, _count="2", _page=page["_page"][0])
    assert _ids(second) == [created[0]]
    assert not any(link["relation"] == "next" for link in second.body["link"])


def test_measurement_times_in_other_offsets_are_ordered_by_the_instant(nurse, patient):
    # 09:00 in Mexico City (-06:00) is 15:00 UTC: after 14:30 UTC, though it sorts first as text
    later = nurse.create(vital("8867-4", 70, "/min", patient, effectiveDateTime="2026-01-15T09:00:00-06:00"))
    earlier = nurse.create(vital("8867-4", 72, "/min", patient, effectiveDateTime="2026-01-15T14:30:00Z"))
    assert _ids(nurse.search(patient=patient)) == [later.body["id"], earlier.body["id"]]
    assert _ids(nurse.search(patient=patient, date="ge2026-01-15T14:45:00Z")) == [later.body["id"]]


def test_search_by_code_and_category(nurse, patient):
    pulse = nurse.create(vital("8867-4", 70, "/min", patient)).body["id"]
    weight = nurse.create(vital("29463-7", 70, "kg", patient)).body["id"]
    assert _ids(nurse.search(patient=patient, code="8867-4")) == [pulse]
    assert _ids(nurse.search(patient=patient, code=f"{LOINC}|29463-7")) == [weight]
    assert set(_ids(nurse.search(patient=patient, code="8867-4,29463-7"))) == {pulse, weight}
    assert _ids(nurse.search(patient=patient, code="http://snomed.info/sct|8867-4")) == []
    assert set(_ids(nurse.search(patient=patient, category="vital-signs"))) == {pulse, weight}
    assert set(_ids(nurse.search(patient=patient, category=f"{CATEGORY_SYSTEM}|vital-signs"))) == {pulse, weight}
    assert _ids(nurse.search(patient=patient, category="laboratory")) == []


def test_search_by_status_and_date(nurse, patient):
    old = nurse.create(vital("8867-4", 70, "/min", patient, effectiveDateTime="2025-03-01T10:00:00Z")).body["id"]
    new = nurse.create(vital("8867-4", 72, "/min", patient, status="preliminary",
                             effectiveDateTime="2026-01-10T10:00:00Z")).body["id"]
    assert _ids(nurse.search(patient=patient, date="2025-03-01")) == [old]
    assert _ids(nurse.search(patient=patient, date="ge2026-01")) == [new]
    assert _ids(nurse.search(patient=patient, date="lt2026")) == [old]
    assert _ids(nurse.search(patient=patient, status="preliminary")) == [new]


def test_search_without_patient_or_encounter_or_with_unknown_parameters_is_rejected(nurse, patient):
    assert nurse.search(code="8867-4").status == 400
    assert nurse.search(patient=patient, value_quantity="70").status == 400
    assert nurse.search(patient=patient, _include="Observation:encounter").status == 400


# -- corrections and history -------------------------------------------------------------------------


def test_update_needs_the_current_version_in_if_match(nurse, patient):
    oid = nurse.create(vital("8867-4", 70, "/min", patient)).body["id"]
    corrected = vital("8867-4", 74, "/min", patient, status="corrected")
    missing = nurse.update(oid, corrected, None)
    assert missing.status == 428
    assert nurse.update(oid, corrected, 1).status == 200
    stale = nurse.update(oid, {**corrected, "valueQuantity": quantity(75, "/min")}, 1)
    assert stale.status == 412
    assert stale.headers["ETag"] == 'W/"2"'
    assert nurse.read(oid).body["valueQuantity"]["value"] == 74


def test_a_correction_keeps_the_first_version_readable(nurse, patient):
    created = nurse.create(vital("8310-5", 38.9, "Cel", patient)).body
    oid = created["id"]
    corrected = {**created, "status": "corrected", "valueQuantity": quantity(37.9, "Cel")}
    reply = nurse.update(oid, corrected, 1)
    assert reply.status == 200, reply.body
    assert reply.headers["ETag"] == 'W/"2"'
    assert reply.body["status"] == "corrected"
    assert reply.body["effectiveDateTime"] == created["effectiveDateTime"]
    first = nurse.vread(oid, 1)
    assert first.status == 200
    assert first.body["valueQuantity"]["value"] == 38.9 and first.body["status"] == "final"
    history = nurse.history(oid)
    assert history.status == 200
    assert history.body["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in history.body["entry"]] == ["2", "1"]
    assert nurse.vread(oid, 3).status == 404


def test_a_correction_keeps_who_measured(nurse, as_role, patient):
    created = nurse.create(vital("8867-4", 70, "/min", patient)).body
    physician = as_role("physician", practitioner_id="physician-1")
    reply = physician.update(created["id"], {**created, "status": "amended"}, 1)
    assert reply.status == 200, reply.body
    assert reply.body["performer"] == [{"reference": "Practitioner/nurse-practitioner-1"}]


def test_a_final_observation_changes_only_as_amended_corrected_or_entered_in_error(nurse, patient):
    created = nurse.create(vital("8867-4", 70, "/min", patient)).body
    reply = nurse.update(created["id"], {**created, "valueQuantity": quantity(71, "/min")}, 1)
    assert reply.status == 422
    assert reply.body["issue"][0]["expression"] == ["Observation.status"]


def test_a_preliminary_observation_becomes_final(nurse, patient):
    created = nurse.create(vital("8867-4", 70, "/min", patient, status="preliminary")).body
    reply = nurse.update(created["id"], {**created, "status": "final"}, 1)
    assert reply.status == 200, reply.body
    assert _ids(nurse.search(patient=patient, status="final")) == [created["id"]]
    assert _ids(nurse.search(patient=patient, status="preliminary")) == []


def test_an_observation_entered_in_error_no_longer_changes(nurse, patient):
    created = nurse.create(vital("8867-4", 70, "/min", patient)).body
    assert nurse.update(created["id"], {**created, "status": "entered-in-error"}, 1).status == 200
    reply = nurse.update(created["id"], {**created, "status": "corrected"}, 2)
    assert reply.status == 422


def test_subject_and_code_cannot_change(nurse, clinic_a, patient):
    created = nurse.create(vital("8867-4", 70, "/min", patient)).body
    other = clinic_a.patient()
    moved = nurse.update(created["id"], {**created, "status": "corrected",
                                         "subject": {"reference": f"Patient/{other}"}}, 1)
    assert moved.status == 422
    assert moved.body["issue"][0]["expression"] == ["Observation.subject"]
    recoded = nurse.update(created["id"], {**vital("9279-1", 18, "/min", patient), "status": "corrected"}, 1)
    assert recoded.status == 422
    assert recoded.body["issue"][0]["expression"] == ["Observation.code"]
    assert nurse.read(created["id"]).headers["ETag"] == 'W/"1"'


def test_delete_answers_405_with_what_to_do_instead(nurse, patient):
    oid = nurse.create(vital("8867-4", 70, "/min", patient)).body["id"]
    reply = nurse.call("DELETE", f"/fhir/Observation/{oid}")
    assert reply.status == 405
    assert "entered-in-error" in reply.issue
    assert nurse.read(oid).status == 200


# -- what notes reference -----------------------------------------------------------------------------


def test_notes_resolve_the_unversioned_reference_to_the_current_vital_sign(nurse, patient):
    created = nurse.create(vital("29463-7", 70, "kg", patient)).body
    nurse.update(created["id"], {**created, "status": "corrected", "valueQuantity": quantity(72, "kg")}, 1)
    current = records.load(TenantId("t-chain-a"), records.Ref("Observation", created["id"]))
    pinned = records.load(TenantId("t-chain-a"), records.Ref("Observation", created["id"], 1))
    assert current is not None and pinned is not None
    assert current.resource["valueQuantity"]["value"] == 72 and pinned.resource["valueQuantity"]["value"] == 70
    assert current.resource["category"][0]["coding"][0]["code"] == "vital-signs"
    assert records.subject_of(current.resource) == patient
    assert records.load(TenantId("t-chain-b"), records.Ref("Observation", created["id"])) is None


# -- audit ---------------------------------------------------------------------------------------------


def test_every_access_writes_one_audit_record(nurse, patient):
    oid = nurse.create(vital("8867-4", 70, "/min", patient)).body["id"]
    before = len(_audit_items())
    nurse.read(oid)
    nurse.vread(oid, 1)
    nurse.history(oid)
    nurse.search(patient=patient)
    items = [i for i in _audit_items() if i["resource_type"] == "Observation"]
    assert len(_audit_items()) == before + 4
    assert sorted(i["action"] for i in items) == ["create", "history-instance", "read", "search-type", "vread"]
    for item in items:
        assert item["patient_ids"] == [patient]
        assert item["roles"] == "nurse" and item["source_ip"] == "203.0.113.10"
    search = next(i for i in items if i["action"] == "search-type")
    assert search["query_params"] == ["patient"]


def test_the_patient_sees_who_read_their_vital_signs(nurse, clinic_a, patient):
    from functions.admin.handler import lambda_handler as admin_handler
    from tests.conftest import invoke
    from tests.support.aws import api_event

    oid = nurse.create(vital("8867-4", 70, "/min", patient)).body["id"]
    nurse.read(oid)
    me = User(tenant="t-chain-a", role="patient", patient_id=patient)
    reply = invoke(admin_handler, api_event("GET", "/fhir/AuditEvent", user=me, query={"patient": patient}))
    assert reply.status == 200, reply.body
    reads = [e["resource"] for e in reply.body["entry"] if e["resource"]["subtype"][0]["code"] == "read"]
    assert any({"reference": f"Observation/{oid}"} == x.get("what") for r in reads for x in r.get("entity", []))
