"""The demo users register, find, update and merge patients over HTTP, as a mobile app would."""

from __future__ import annotations

import pytest

from tests.support.curp import make_curp

pytestmark = pytest.mark.e2e
CURP = "urn:oid:2.16.840.1.113883.4.629"


def _patient(curp: str | None, family: str = "Ramírez") -> dict:
    body = {"resourceType": "Patient", "name": [{"family": family, "given": ["Lucía"]}],
            "birthDate": "1985-03-10", "gender": "female"}
    if curp:
        body["identifier"] = [{"system": CURP, "value": curp}]
    return body


def test_register_find_update_and_merge_over_http(api):
    reception = api.as_user("reception")
    curp = make_curp(prefix="RAAL", birth="850310", sex="M")
    created = reception.post("/fhir/Patient", json=_patient(curp), headers={"Idempotency-Key": "e2e-1"})
    assert created.status_code == 201, created.text
    assert created.headers["Content-Type"].startswith("application/fhir+json")
    pid = created.json()["id"]
    assert created.headers["ETag"] == 'W/"1"'
    assert created.headers["Location"].startswith(api.url)

    found = reception.get("/fhir/Patient", params={"family": "ramirez", "given": "luc"}).json()
    assert pid in {e["resource"]["id"] for e in found["entry"]}
    by_curp = reception.get("/fhir/Patient", params={"identifier": f"{CURP}|{curp}"}).json()
    assert [e["resource"]["id"] for e in by_curp["entry"]] == [pid]

    duplicate = reception.post("/fhir/Patient", json=_patient(curp))
    assert duplicate.status_code == 409 and duplicate.json()["resourceType"] == "OperationOutcome"

    resource = created.json()
    resource["telecom"] = [{"system": "phone", "value": "7711234567"}]
    updated = reception.put(f"/fhir/Patient/{pid}", json=resource, headers={"If-Match": 'W/"1"'})
    assert updated.status_code == 200 and updated.headers["ETag"] == 'W/"2"'
    assert reception.put(f"/fhir/Patient/{pid}", json=resource, headers={"If-Match": 'W/"1"'}).status_code == 412

    unidentified = reception.post("/fhir/Patient", json=_patient(None)).json()
    merged = api.as_user("admin").post("/fhir/Patient/$merge", json={"resourceType": "Parameters", "parameter": [
        {"name": "source-patient", "valueReference": {"reference": f"Patient/{unidentified['id']}"}},
        {"name": "target-patient", "valueReference": {"reference": f"Patient/{pid}"}}]})
    assert merged.status_code == 200, merged.text
    assert reception.get(f"/fhir/Patient/{unidentified['id']}").json()["active"] is False

    other_chain = api.as_user("physician", tenant_index=1)
    assert other_chain.get(f"/fhir/Patient/{pid}").status_code == 404
    assert other_chain.get("/fhir/Patient", params={"identifier": curp}).json()["entry"] == []

    audit = api.as_user("auditor").get("/fhir/AuditEvent", params={"patient": f"Patient/{pid}"})
    assert audit.status_code == 200, audit.text
    assert len(audit.json()["entry"]) >= 3
