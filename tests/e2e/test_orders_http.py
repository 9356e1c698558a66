"""A physician orders a lab test and a chest X-ray over HTTP; the lab works its clinic's worklist."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e
SNOMED = "http://snomed.info/sct"
STATUS = "https://expediente.mx/fhir/StructureDefinition/estado-orden"


def test_order_worklist_and_status_over_http(api):
    tenant = api.tenant(0)
    patient, clues = tenant.patient_ids[0], tenant.clinics[0].clues
    physician, lab = api.as_user("physician"), api.as_user("lab")
    encounter = physician.post("/fhir/Encounter", json={
        "resourceType": "Encounter", "status": "in-progress", "subject": {"reference": f"Patient/{patient}"},
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}).json()
    common = {"resourceType": "ServiceRequest", "intent": "order", "subject": {"reference": f"Patient/{patient}"},
              "encounter": {"reference": f"Encounter/{encounter['id']}"},
              "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "R06.0"}]}]}
    lab_order = physician.post("/fhir/ServiceRequest", headers={"Idempotency-Key": "e2e-order-1"}, json={
        **common, "category": [{"coding": [{"system": SNOMED, "code": "108252007"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]}})
    assert lab_order.status_code == 201, lab_order.text
    xray = physician.post("/fhir/ServiceRequest", json={
        **common, "category": [{"coding": [{"system": SNOMED, "code": "363679005"}]}],
        "code": {"text": "Radiografía de tórax PA"}, "bodySite": [{"text": "Tórax"}],
        "orderDetail": [{"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "DX"}]}]})
    assert xray.status_code == 201, xray.text
    assert xray.json()["identifier"][0]["system"] == "urn:expediente:accession"

    worklist = lab.get("/fhir/ServiceRequest", params={"clinic": clues, "status": "requested"}).json()
    assert lab_order.json()["id"] in {e["resource"]["id"] for e in worklist["entry"]}
    start = {"resourceType": "Parameters", "parameter": [{"name": "status", "valueCode": "in-process"}]}
    started = lab.post(f"/fhir/ServiceRequest/{lab_order.json()['id']}/$status", headers={"If-Match": 'W/"1"'},
                       json=start)
    assert started.status_code == 200, started.text
    assert next(e["valueCode"] for e in started.json()["extension"] if e["url"] == STATUS) == "in-process"
    assert lab.post(f"/fhir/ServiceRequest/{xray.json()['id']}/$status", headers={"If-Match": 'W/"1"'},
                    json={"resourceType": "Parameters", "parameter": [
                        {"name": "status", "valueCode": "in-process"}]}).status_code == 403
    assert api.as_user("lab", tenant_index=1).get(f"/fhir/ServiceRequest/{xray.json()['id']}").status_code == 404
