"""Over HTTP on the local stack: the lab's results arrive by HL7 v2, the order completes by itself (queue and
dispatcher), a critical potassium is notified (EventBridge → SNS topic) and acknowledged, the report prints."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.e2e
SNOMED = "http://snomed.info/sct"
STATUS = "https://expediente.mx/fhir/StructureDefinition/estado-orden"
ER7 = "x-application/hl7-v2+er7"


def _status(order: dict) -> str:
    return next(e["valueCode"] for e in order["extension"] if e["url"] == STATUS)


def _oru(patient: str, placer: str, control: str) -> str:
    lines = [
        r"MSH|^~\&|LABSYS|LAB CENTRAL|EXPEDIENTE|HGIMB000151|20261125143000-0600||ORU^R01^ORU_R01|" + control
        + "|P|2.5.1",
        f"PID|1||{patient}^^^EXPEDIENTE^MR||PÉREZ GÓMEZ^JUAN||19800101|M",
        f"ORC|RE|{placer}|F-{control}||CM",
        f"OBR|1|{placer}|F-{control}|2823-3^Potassium^LN|||20261125080000-0600||||||||||||||||||F",
        "OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L^^UCUM|3.5-5.1|HH|||F|||20261125080000-0600",
    ]
    return "\r".join(lines) + "\r"


def test_hl7_results_complete_the_order_and_a_critical_value_is_notified_and_acknowledged(api, local_aws):
    tenant = api.tenant(0)
    patient = tenant.patient_ids[0]
    physician, lab = api.as_user("physician"), api.as_user("lab")
    encounter = physician.post("/fhir/Encounter", json={
        "resourceType": "Encounter", "status": "in-progress", "subject": {"reference": f"Patient/{patient}"},
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}).json()
    order = physician.post("/fhir/ServiceRequest", json={
        "resourceType": "ServiceRequest", "intent": "order", "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{encounter['id']}"},
        "category": [{"coding": [{"system": SNOMED, "code": "108252007"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
        "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10X"}]}]})
    assert order.status_code == 201, order.text
    order_id, placer = order.json()["id"], order.json()["identifier"][0]["value"]

    ack = lab.post("/hl7v2", data=_oru(patient, placer, "E2E0001").encode("utf-8"),
                   headers={"Content-Type": ER7})
    assert ack.status_code == 200 and ack.headers["Content-Type"] == ER7
    assert "MSA|AA|E2E0001" in ack.text, ack.text

    deadline = time.monotonic() + 20  # the local dispatcher delivers ResultRecorded to the orders function
    current = physician.get(f"/fhir/ServiceRequest/{order_id}").json()
    while _status(current) != "completed" and time.monotonic() < deadline:
        time.sleep(0.3)
        current = physician.get(f"/fhir/ServiceRequest/{order_id}").json()
    assert _status(current) == "completed"

    results = physician.get("/fhir/Observation", params={"based-on": f"ServiceRequest/{order_id}"}).json()
    [result] = [e["resource"] for e in results["entry"]]
    assert result["interpretation"][0]["coding"][0]["code"] == "HH"

    inbox = local_aws.topics["critical_notifications"].inbox_url
    sqs = local_aws.client("sqs")
    notified: list[dict] = []
    deadline = time.monotonic() + 10
    while not any(n.get("detail", {}).get("observation_id") == result["id"] for n in notified) \
            and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []):
            notified.append(json.loads(message["Body"]))
    [detected] = [n for n in notified if n.get("detail", {}).get("observation_id") == result["id"]]
    assert detected["detail-type"] == "CriticalResultDetected"
    # ids only, never the value (compared field by field: an instant such as 02:26:16.941Z contains "6.9")
    assert not [k for k, v in detected["detail"].items() if v in (6.9, "6.9") or "mmol" in str(v)]

    acknowledged = physician.post(f"/fhir/Observation/{result['id']}/$acknowledge", json={
        "resourceType": "Parameters", "parameter": [{"name": "readBack", "valueString": "Potasio 6.9"}]})
    assert acknowledged.status_code == 200, acknowledged.text
    assert acknowledged.json()["status"] == "completed"

    [report] = [e["resource"] for e in physician.get("/fhir/DiagnosticReport", params={
        "based-on": f"ServiceRequest/{order_id}"}).json()["entry"]]
    pdf = physician.get(f"/fhir/DiagnosticReport/{report['id']}/$print", params={"_format": "pdf"})
    assert pdf.status_code == 200 and pdf.headers["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
