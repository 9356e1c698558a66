"""ARCO cancellation: the record is blocked from clinical use while NOM-004 retention runs, and nothing is deleted.

Every domain is tried after the block: notes, results (vital signs, laboratory over HL7 v2), orders,
prescriptions, allergies, the Patient itself, and DICOM ingest (quarantined with a reason).
"""

# ruff: noqa: F811  (the notes world's fixtures are imported here and requested by name)

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import boto3
import pytest

from tests.conftest import Reply
from tests.integration.hl7v2.test_hl7v2 import msa, oru, placer_of, potassium, send
from tests.integration.imaging.conftest import Imaging, dicom_bytes
from tests.integration.notes.conftest import (  # noqa: F401  (fixtures, requested by name)
    Chain,
    Staff,
    admin_world,
    chain,
    condition_body,
    encounter_body,
    other_chain,
    patient_id,
    physician,
    reception,
    vital_body,
)
from tests.integration.orders.conftest import lab_order
from tests.integration.prescriptions.conftest import prescription, rx
from tests.support.aws import REGION, table_name

from .test_everything import Record, everything, make_record

SUPPRESSED = "suppressed"


def cancel(staff: Staff, patient: str, *, reason: str = "Solicitud ARCO de cancelación presentada en ventanilla",
           request_date: str | None = None) -> Reply:
    params: list[dict[str, Any]] = []
    if reason is not None:
        params.append({"name": "reason", "valueString": reason})
    params.append({"name": "requestDate", "valueDate": request_date or date.today().isoformat()})
    return staff.patients("POST", f"/fhir/Patient/{patient}/$arco-cancel",
                          {"resourceType": "Parameters", "parameter": params})


def _blocked(reply: Reply) -> bool:
    return reply.status == 403 and reply.body["issue"][0]["code"] == SUPPRESSED and "ARCO" in reply.issue


def _admin(chain: Chain) -> Staff:
    return Staff(chain.tenant.admin, None)


def _all_items() -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every item of every table (test-only Scan), by (table, pk, sk)."""
    client = boto3.client("dynamodb", region_name=REGION)
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for table_id in ("patients", "notes", "results", "orders", "prescriptions", "audit"):
        name = table_name(table_id)
        for page in client.get_paginator("scan").paginate(TableName=name):
            for item in page["Items"]:
                out[(table_id, item["pk"]["S"], item["sk"]["S"])] = item
    return out


@pytest.fixture
def record(physician: Staff, patient_id: str) -> Record:
    return make_record(physician, patient_id)


def test_a_cancellation_blocks_the_record_until_five_years_after_its_last_act(chain: Chain, physician: Staff,
                                                                             record: Record) -> None:
    admin = _admin(chain)
    before = physician.patients("GET", f"/fhir/Patient/{record.patient_id}").body
    reply = cancel(admin, record.patient_id, request_date="2026-11-20")
    assert reply.status == 200, reply.body
    blocked = reply.body
    assert blocked["active"] is False and blocked["meta"]["versionId"] == str(int(before["meta"]["versionId"]) + 1)
    assert reply.headers["ETag"] == f'W/"{blocked["meta"]["versionId"]}"'
    assert any(t["code"] == "arco-blocked" for t in blocked["meta"]["tag"])
    request = next(e for e in blocked["extension"] if e["url"].endswith("arco-cancellation"))
    parts = {e["url"]: next(v for k, v in e.items() if k.startswith("value")) for e in request["extension"]}
    assert parts["requestDate"] == "2026-11-20" and parts["reason"].startswith("Solicitud ARCO")
    last_act = datetime.fromisoformat(parts["lastAct"].replace("Z", "+00:00"))
    assert abs(last_act - datetime.now(UTC)) < timedelta(minutes=5)  # the prescription signed a moment ago
    assert parts["retentionUntil"] == last_act.date().replace(year=last_act.year + 5).isoformat()
    # the same identity, demographics and every earlier version are kept
    assert blocked["identifier"] == before["identifier"] and blocked["name"] == before["name"]
    history = admin.patients("GET", f"/fhir/Patient/{record.patient_id}/_history")
    assert history.status == 200 and history.body["total"] == int(blocked["meta"]["versionId"])
    # audited as the operation, with no free text
    auditor = Staff(chain.world.user(chain.tenant, "auditor"), None)
    trail = auditor.admin("GET", "/fhir/AuditEvent", query={"patient": f"Patient/{record.patient_id}"})
    assert trail.status == 200, trail.body
    cancellations = [e["resource"] for e in trail.body["entry"]
                     if e["resource"]["subtype"][0]["code"] == "$arco-cancel"]
    assert len(cancellations) == 1 and "Solicitud" not in str(cancellations)
    # once is enough: a second request answers 409 and writes nothing
    again = cancel(admin, record.patient_id)
    assert again.status == 409 and parts["retentionUntil"] in again.issue


def test_nothing_is_deleted_by_a_cancellation(chain: Chain, record: Record) -> None:
    before = _all_items()
    assert cancel(_admin(chain), record.patient_id).status == 200
    after = _all_items()
    missing = before.keys() - after.keys()
    # only the patient's search-index items move (active=false), exactly as for any deactivation
    assert all(table == "patients" and pk.endswith("#PIDX") for table, pk, _ in missing), missing
    changed = [key for key in before.keys() & after.keys() if before[key] != after[key]]
    assert all(table == "patients" and (sk == "CURRENT" or pk.endswith("#PIDX")) for table, pk, sk in changed), changed
    clinical = [k for k in before if k[0] in ("notes", "results", "orders", "prescriptions")]
    assert clinical and all(after[k] == before[k] for k in clinical)


def test_a_blocked_record_takes_no_new_clinical_data_in_any_domain(chain: Chain, physician: Staff,
                                                                    reception: Staff, record: Record) -> None:
    assert cancel(_admin(chain), record.patient_id).status == 200
    pid = record.patient_id
    encounter = next(iter(record.ids["Encounter"]))
    condition = next(iter(record.ids["Condition"]))
    nurse, lab = chain.staff("nurse"), chain.staff("lab")
    attempts = {
        "Encounter create": physician.notes("POST", "/fhir/Encounter", encounter_body(pid)),
        "Condition create": physician.notes("POST", "/fhir/Condition", condition_body(pid)),
        "Condition update": physician.notes("PUT", f"/fhir/Condition/{condition}", condition_body(
            pid, id=condition, clinicalStatus={"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "resolved"}]}),
            headers={"If-Match": 'W/"1"'}),
        "Observation (vital signs)": nurse.results("POST", "/fhir/Observation",
                                                   vital_body(pid, "29463-7", 70, "kg", encounter)),
        "ServiceRequest": physician.orders("POST", "/fhir/ServiceRequest", lab_order(pid, encounter)),
        "MedicationRequest": rx(physician, "POST", "/fhir/MedicationRequest", prescription(pid)),
        "AllergyIntolerance": rx(physician, "POST", "/fhir/AllergyIntolerance", {
            "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{pid}"},
            "category": ["medication"], "code": {"coding": [{"system": "http://www.whocc.no/atc",
                                                             "code": "J01CA04"}]}}),
        "Patient update": _update_patient_as(reception, _admin(chain), pid),
        "ServiceRequest $status": lab.orders("POST", f"/fhir/ServiceRequest/{next(iter(record.ids['ServiceRequest']))}"
                                             "/$status", {"resourceType": "Parameters", "parameter": [
                                                 {"name": "status", "valueCode": "active"}]},
                                             headers={"If-Match": 'W/"1"'}),
    }
    refused = {name: reply.status for name, reply in attempts.items() if not _blocked(reply)}
    assert not refused, {name: (attempts[name].status, attempts[name].body) for name in refused}


def _update_patient_as(staff: Staff, admin: Staff, pid: str) -> Reply:
    """A reception PUT of the blocked Patient (admin reads the current version to send it back active)."""
    current = admin.patients("GET", f"/fhir/Patient/{pid}").body
    body = {k: v for k, v in current.items() if k != "meta"}
    return staff.patients("PUT", f"/fhir/Patient/{pid}", {**body, "active": True},
                          headers={"If-Match": f'W/"{current["meta"]["versionId"]}"'})


def test_hl7_results_for_a_blocked_record_are_refused_and_nothing_is_stored(chain: Chain, physician: Staff,
                                                                             reception: Staff, record: Record) -> None:
    lab = chain.staff("lab")
    order = physician.orders("POST", "/fhir/ServiceRequest",
                             lab_order(record.patient_id, next(iter(record.ids["Encounter"])))).body
    assert cancel(_admin(chain), record.patient_id).status == 200
    before = _all_items()
    ack = send(lab, oru(patient=record.patient_id, placer=placer_of(order), obx=[potassium("4.4")]))
    code, _ = msa(ack.body)
    assert code in ("AE", "AR") and "ARCO" in ack.body, ack.body
    stored = {k for k in _all_items().keys() - before.keys() if k[0] != "audit"}
    assert not [k for k in stored if k[0] == "results"], stored


def test_dicom_images_for_a_blocked_record_are_quarantined_with_the_reason(chain: Chain, physician: Staff,
                                                                           record: Record) -> None:
    imaging = Imaging(chain=chain, physician=physician, radiology=chain.staff("radiology"), admin=_admin(chain),
                      patient_id=record.patient_id, encounter_id=next(iter(record.ids["Encounter"])))
    order = imaging.order()
    assert cancel(_admin(chain), record.patient_id).status == 200
    imaging.ingest(dicom_bytes("CT_small.dcm", patient_id=record.patient_id, accession=imaging.accession(order)))
    assert imaging.keys("imaging") == []
    listed = imaging.quarantine_call("GET", "/admin/dicom-quarantine")
    assert listed.status == 200, listed.body
    assert "record-blocked" in str(listed.body)


def test_clinical_roles_no_longer_see_the_record_but_the_patient_admin_and_auditor_do(
        chain: Chain, physician: Staff, reception: Staff, record: Record) -> None:
    pid = record.patient_id
    curp = physician.patients("GET", f"/fhir/Patient/{pid}").body["identifier"][0]["value"]
    assert cancel(_admin(chain), pid).status == 200
    # clinical reads answer 403 suppressed; searches leave the record out
    assert _blocked(physician.patients("GET", f"/fhir/Patient/{pid}"))
    assert _blocked(physician.patients("GET", f"/fhir/Patient/{pid}/_history/1"))
    assert _blocked(physician.notes("GET", f"/fhir/Encounter/{next(iter(record.ids['Encounter']))}"))
    assert _blocked(physician.results("GET", f"/fhir/Observation/{next(iter(record.ids['Observation']))}"))
    assert _blocked(rx(physician, "GET", f"/fhir/MedicationRequest/{next(iter(record.ids['MedicationRequest']))}"))
    assert _blocked(everything(physician, pid))
    assert not reception.patients("GET", "/fhir/Patient", query={"identifier": curp}).body.get("entry")
    assert not physician.notes("GET", "/fhir/Encounter", query={"patient": pid}).body.get("entry")
    assert not physician.results("GET", "/fhir/Observation", query={"patient": pid}).body.get("entry")
    # the legal copy, the patient's own access and the audit trail remain
    legal = everything(_admin(chain), pid)
    assert legal.status == 200 and len(legal.body["entry"]) > 10
    mine = everything(chain.patient_user(pid), pid)
    assert mine.status == 200 and {e["resource"]["id"] for e in mine.body["entry"]} >= {
        e["resource"]["id"] for e in legal.body["entry"]}
    assert chain.patient_user(pid).patients("GET", f"/fhir/Patient/{pid}").status == 200
    auditor = Staff(chain.world.user(chain.tenant, "auditor"), None)
    assert auditor.admin("GET", "/fhir/AuditEvent", query={"patient": f"Patient/{pid}"}).body.get("entry")


def test_a_cancellation_request_is_checked_and_only_an_administrator_records_it(
        chain: Chain, physician: Staff, record: Record, other_chain: Chain) -> None:
    admin = _admin(chain)
    tomorrow = (date.today() + timedelta(days=2)).isoformat()
    assert cancel(admin, record.patient_id, request_date=tomorrow).status == 400
    assert cancel(admin, record.patient_id, request_date="2026-02-30").status == 400
    assert cancel(admin, record.patient_id, reason="  ").status == 400
    assert cancel(physician, record.patient_id).status == 403
    assert cancel(chain.patient_user(record.patient_id), record.patient_id).status == 403
    assert cancel(_admin(other_chain), record.patient_id).status == 404
    # none of those blocked anything
    assert physician.patients("GET", f"/fhir/Patient/{record.patient_id}").status == 200
