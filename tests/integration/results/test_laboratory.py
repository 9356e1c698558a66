"""Laboratory results end to end: linked to their order, completing it, critical values closing the loop.

The chain, its clinic, staff and patients are made through the product (admin, patients, notes and
orders functions); events published on the bus are delivered to the orders function the way the
``results_to_orders`` rule and its queue deliver them.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.notes.conftest import CLUES, Chain, Staff
from tests.integration.orders.conftest import imaging_order, lab_order
from tests.support.aws import LambdaContext

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def lab_result(patient: str, code: str, value: float, unit: str, *, order: str | None = None,
               low: float | None = None, high: float | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-11-25T08:00:00-06:00",
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}, **extra}
    if order:
        body["basedOn"] = [{"reference": f"ServiceRequest/{order}"}]
    if low is not None or high is not None:
        band: dict[str, Any] = {}
        if low is not None:
            band["low"] = {"value": low, "unit": unit, "system": UCUM, "code": unit}
        if high is not None:
            band["high"] = {"value": high, "unit": unit, "system": UCUM, "code": unit}
        body["referenceRange"] = [band]
    return body


def flag(resource: dict[str, Any]) -> str:
    return str(resource["interpretation"][0]["coding"][0]["code"])


def deliver_to_orders(chain: Chain) -> list[dict[str, Any]]:
    """Deliver the ResultRecorded events published so far to the orders function (as SQS would); return all."""
    from functions.orders.handler import lambda_handler

    published = chain.world.world.published()
    records = [{"messageId": f"m{i}", "receiptHandle": f"r{i}", "body": json.dumps(e), "attributes": {},
                "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:order-results", "awsRegion": "us-east-1"}
               for i, e in enumerate(published) if e["detail-type"] == "ResultRecorded"]
    if records:
        outcome = lambda_handler({"Records": records}, LambdaContext())
        assert outcome == {"batchItemFailures": []}
    return published


class Lab:
    """A physician who orders, a lab user who reports, for one patient in one open encounter."""

    def __init__(self, chain: Chain, physician: Staff, reception: Staff):
        self.chain = chain
        self.physician = physician
        self.reception = reception
        self.lab = chain.staff("lab")
        self.patient = chain.register_patient(reception)
        encounter = physician.notes("POST", "/fhir/Encounter", {
            "resourceType": "Encounter", "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{self.patient}"}})
        assert encounter.status == 201, encounter.body
        self.encounter = encounter.body["id"]

    def order(self, code: str = "2823-3") -> dict[str, Any]:
        reply = self.physician.orders("POST", "/fhir/ServiceRequest", lab_order(self.patient, self.encounter, code))
        assert reply.status == 201, reply.body
        return dict(reply.body)

    def report(self, body: dict[str, Any]) -> Any:
        return self.lab.results("POST", "/fhir/Observation", body)

    def order_status(self, order_id: str) -> str:
        reply = self.physician.orders("GET", f"/fhir/ServiceRequest/{order_id}")
        return str(next(e["valueCode"] for e in reply.body["extension"] if e["url"].endswith("/estado-orden")))


@pytest.fixture
def lab(chain: Chain, physician: Staff, reception: Staff) -> Lab:
    chain.world.world.published()  # start with an empty event queue
    return Lab(chain, physician, reception)


# ------------------------------------------------------------------ results and orders ---


def test_a_result_for_an_order_is_flagged_from_its_range_and_completes_the_order(lab: Lab) -> None:
    order = lab.order("2345-7")
    reply = lab.report(lab_result(lab.patient, "2345-7", 130, "mg/dL", order=order["id"], low=70, high=100))
    assert reply.status == 201, reply.body
    assert flag(reply.body) == "H"
    assert reply.body["basedOn"] == [{"reference": f"ServiceRequest/{order['id']}"}]
    assert reply.body["code"]["coding"][0]["display"] == "Glucose [Mass/volume] in Serum or Plasma"
    published = deliver_to_orders(lab.chain)
    recorded = [e for e in published if e["detail-type"] == "ResultRecorded"]
    assert recorded[0]["detail"]["order_ids"] == [order["id"]]
    assert lab.order_status(order["id"]) == "completed"
    moves = [(e["detail"]["previous_status"], e["detail"]["status"]) for e in lab.chain.world.world.published()
             if e["detail-type"] == "OrderStatusChanged"]
    assert moves == [("requested", "in-process"), ("in-process", "completed")]
    history = lab.physician.orders("GET", f"/fhir/ServiceRequest/{order['id']}/_history")
    assert history.body["total"] == 3


def test_a_preliminary_result_moves_the_order_in_process_only_and_redelivery_changes_nothing(lab: Lab) -> None:
    order = lab.order("2951-2")
    reply = lab.report(lab_result(lab.patient, "2951-2", 140, "mmol/L", order=order["id"], status="preliminary"))
    assert reply.status == 201, reply.body
    published = deliver_to_orders(lab.chain)
    assert lab.order_status(order["id"]) == "in-process"
    from functions.orders.handler import lambda_handler

    again = [{"messageId": "x", "receiptHandle": "x", "body": json.dumps(e), "eventSource": "aws:sqs",
              "attributes": {}, "messageAttributes": {}, "md5OfBody": "", "eventSourceARN": "arn", "awsRegion": "x"}
             for e in published if e["detail-type"] == "ResultRecorded"]
    assert lambda_handler({"Records": again}, LambdaContext()) == {"batchItemFailures": []}
    history = lab.physician.orders("GET", f"/fhir/ServiceRequest/{order['id']}/_history")
    assert history.body["total"] == 2  # requested, in-process: the redelivered event changed nothing


def test_a_panel_order_completes_with_a_final_report_of_final_results(lab: Lab) -> None:
    order = lab.order("24323-8")  # comprehensive metabolic panel: only ordered, never a result itself
    panel_as_result = lab.report(lab_result(lab.patient, "24323-8", 1, "1", order=order["id"]))
    assert panel_as_result.status == 400, panel_as_result.body
    assert "panel" in panel_as_result.issue
    potassium = lab.report(lab_result(lab.patient, "2823-3", 4.1, "mmol/L", order=order["id"], status="preliminary"))
    sodium = lab.report(lab_result(lab.patient, "2951-2", 139, "mmol/L", order=order["id"]))
    report = {"resourceType": "DiagnosticReport", "status": "final",
              "code": {"coding": [{"system": LOINC, "code": "24323-8"}]},
              "subject": {"reference": f"Patient/{lab.patient}"},
              "basedOn": [{"reference": f"ServiceRequest/{order['id']}"}],
              "result": [{"reference": f"Observation/{potassium.body['id']}"},
                         {"reference": f"Observation/{sodium.body['id']}"}],
              "conclusion": "Electrolitos dentro de límites normales."}
    refused = lab.lab.results("POST", "/fhir/DiagnosticReport", report)
    assert refused.status == 422, refused.body
    assert refused.body["issue"][0]["expression"] == ["DiagnosticReport.result[0]"]
    final_k = lab.lab.results("PUT", f"/fhir/Observation/{potassium.body['id']}",
                              {**lab_result(lab.patient, "2823-3", 4.1, "mmol/L", order=order["id"]),
                               "id": potassium.body["id"]}, headers={"If-Match": 'W/"1"'})
    assert final_k.status == 200, final_k.body
    deliver_to_orders(lab.chain)
    assert lab.order_status(order["id"]) == "in-process"  # single results of a panel do not complete it
    created = lab.lab.results("POST", "/fhir/DiagnosticReport", report)
    assert created.status == 201, created.body
    forms = {f["contentType"] for f in created.body["presentedForm"]}
    assert forms == {"application/pdf", "text/html"}
    deliver_to_orders(lab.chain)
    assert lab.order_status(order["id"]) == "completed"
    included = lab.physician.results("GET", "/fhir/DiagnosticReport",
                                      query={"patient": lab.patient, "_include": "DiagnosticReport:result"})
    kinds = sorted(e["resource"]["resourceType"] for e in included.body["entry"])
    assert kinds == ["DiagnosticReport", "Observation", "Observation"]


def test_results_must_answer_a_laboratory_order_of_the_same_patient(lab: Lab, reception: Staff) -> None:
    imaging = lab.physician.orders("POST", "/fhir/ServiceRequest", imaging_order(lab.patient, lab.encounter))
    assert imaging.status == 201, imaging.body
    wrong_kind = lab.report(lab_result(lab.patient, "2823-3", 4, "mmol/L", order=imaging.body["id"]))
    assert wrong_kind.status == 422 and "not a laboratory order" in wrong_kind.issue
    other_patient = lab.chain.register_patient(reception)
    order = lab.order()
    wrong_patient = lab.report(lab_result(other_patient, "2823-3", 4, "mmol/L", order=order["id"]))
    assert wrong_patient.status == 422 and "not an order of this patient" in wrong_patient.issue
    vital_with_order = lab.physician.results("POST", "/fhir/Observation", {
        "resourceType": "Observation", "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{lab.patient}"}, "basedOn": [{"reference": f"ServiceRequest/{order['id']}"}],
        "valueQuantity": {"value": 80, "system": UCUM, "code": "/min"}})
    assert vital_with_order.status == 400 and vital_with_order.body["issue"][0]["expression"] == ["Observation.basedOn"]
    lab_writes_vitals = lab.lab.results("POST", "/fhir/Observation", {
        "resourceType": "Observation", "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{lab.patient}"}, "valueQuantity": {"value": 80, "system": UCUM,
                                                                               "code": "/min"}})
    assert lab_writes_vitals.status == 403


def test_a_corrected_result_keeps_the_earlier_version(lab: Lab) -> None:
    first = lab.report(lab_result(lab.patient, "718-7", 13.5, "g/dL", low=12, high=16))
    oid = first.body["id"]
    corrected = lab.lab.results("PUT", f"/fhir/Observation/{oid}",
                                {**lab_result(lab.patient, "718-7", 11.2, "g/dL", low=12, high=16), "id": oid,
                                 "status": "corrected"}, headers={"If-Match": 'W/"1"'})
    assert corrected.status == 200, corrected.body
    assert flag(corrected.body) == "L"
    old = lab.physician.results("GET", f"/fhir/Observation/{oid}/_history/1")
    assert old.body["valueQuantity"]["value"] == 13.5 and old.body["status"] == "final"


# ------------------------------------------------------------------ views ---


def test_lastn_and_trend_give_the_latest_value_of_each_test_and_one_test_over_time(lab: Lab) -> None:
    for day, value in ((1, 95), (2, 130), (3, 110)):
        reply = lab.report({**lab_result(lab.patient, "2345-7", value, "mg/dL", low=70, high=100),
                            "effectiveDateTime": f"2026-11-0{day}T08:00:00-06:00"})
        assert reply.status == 201, reply.body
    lab.report(lab_result(lab.patient, "2823-3", 4.0, "mmol/L"))
    latest = lab.physician.results("GET", "/fhir/Observation/$lastn", query={"patient": lab.patient,
                                                                             "category": "laboratory"})
    assert latest.status == 200, latest.body
    values = {e["resource"]["code"]["coding"][0]["code"]: e["resource"]["valueQuantity"]["value"]
              for e in latest.body["entry"]}
    assert values == {"2345-7": 110, "2823-3": 4.0}
    two = lab.physician.results("GET", "/fhir/Observation/$lastn", query={"patient": lab.patient, "code": "2345-7",
                                                                          "max": "2"})
    assert [e["resource"]["valueQuantity"]["value"] for e in two.body["entry"]] == [110, 130]
    trend = lab.physician.results("GET", "/fhir/Observation/$trend", query={"patient": lab.patient,
                                                                            "code": "http://loinc.org|2345-7"})
    assert trend.status == 200, trend.body
    points = [p for p in trend.body["parameter"] if p["name"] == "point"]
    parts = [{q["name"]: q for q in p["part"]} for p in points]
    assert [p["value"]["valueQuantity"]["value"] for p in parts] == [95, 130, 110]
    assert [p["interpretation"]["valueCode"] for p in parts] == ["N", "H", "H"]
    assert parts[0]["high"]["valueQuantity"]["value"] == 100
    missing = lab.physician.results("GET", "/fhir/Observation/$trend", query={"patient": lab.patient})
    assert missing.status == 400


def test_the_printable_report_renders_values_and_a_trend_for_abnormal_tests(lab: Lab) -> None:
    order = lab.order("2345-7")
    lab.report({**lab_result(lab.patient, "2345-7", 150, "mg/dL", low=70, high=100),
                "effectiveDateTime": "2026-11-01T08:00:00-06:00"})
    result = lab.report(lab_result(lab.patient, "2345-7", 180, "mg/dL", order=order["id"], low=70, high=100))
    report = lab.lab.results("POST", "/fhir/DiagnosticReport", {
        "resourceType": "DiagnosticReport", "status": "final", "code": {"coding": [{"system": LOINC,
                                                                                   "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{lab.patient}"}, "basedOn": [{"reference": f"ServiceRequest/{order['id']}"}],
        "result": [{"reference": f"Observation/{result.body['id']}"}], "conclusion": "Hiperglucemia."})
    assert report.status == 201, report.body
    page = lab.physician.results("GET", f"/fhir/DiagnosticReport/{report.body['id']}/$print",
                                 query={"_format": "html"})
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "180" in page.body and "ALTO" in page.body and "<svg" in page.body and "Hiperglucemia." in page.body
    from functions.results.handler import lambda_handler
    from tests.integration.admin.conftest import api_event

    raw = lambda_handler(api_event("GET", f"/fhir/DiagnosticReport/{report.body['id']}/$print",
                                   claims=lab.physician.caller.claims, headers=lab.physician.caller.headers),
                         LambdaContext())
    assert raw["statusCode"] == 200 and raw["isBase64Encoded"] is True
    assert base64.b64decode(raw["body"]).startswith(b"%PDF-")
    someone_else = lab.chain.register_patient(lab.reception)  # another patient of the chain, with an account
    refused = lab.chain.patient_user(someone_else).results("GET", f"/fhir/DiagnosticReport/{report.body['id']}")
    assert refused.status == 404


# ------------------------------------------------------------------ critical values ---


def alerts_of(staff: Staff, observation_id: str) -> list[dict[str, Any]]:
    reply = staff.results("GET", "/fhir/Communication", query={"about": f"Observation/{observation_id}"})
    assert reply.status == 200, reply.body
    return [e["resource"] for e in reply.body.get("entry", [])]


def test_a_critical_potassium_is_flagged_alerted_with_ids_only_and_acknowledged_with_read_back(lab: Lab) -> None:
    order = lab.order()
    reply = lab.report(lab_result(lab.patient, "2823-3", 6.9, "mmol/L", order=order["id"], low=3.5, high=5.1))
    assert reply.status == 201, reply.body
    assert flag(reply.body) == "HH"
    events = [e for e in lab.chain.world.world.published() if e["detail-type"] == "CriticalResultDetected"]
    assert len(events) == 1
    detail = events[0]["detail"]
    assert detail["observation_id"] == reply.body["id"] and detail["practitioner_id"] == lab.physician.practitioner_id
    assert detail["clinic"] == CLUES and detail["interpretation"] == "HH"
    # ids only, never the value (compared field by field: an instant such as 01:14:06.998Z contains "6.9")
    assert not [k for k, v in detail.items() if v in (6.9, "6.9") or "mmol" in str(v)]
    assert set(detail) == {"tenant_id", "occurred_at", "request_id", "alert_id", "observation_id", "patient_id",
                           "clinic", "code", "interpretation", "practitioner_id", "acknowledge_by"}
    [alert] = alerts_of(lab.physician, reply.body["id"])
    assert alert["status"] == "in-progress"
    assert alert["recipient"] == [{"reference": f"Practitioner/{lab.physician.practitioner_id}"}]

    nurse = lab.chain.staff("nurse")
    assert nurse.results("POST", f"/fhir/Observation/{reply.body['id']}/$acknowledge",
                         {"resourceType": "Parameters", "parameter": [{"name": "readBack",
                                                                       "valueString": "K 6.9"}]}).status == 403
    empty = lab.physician.results("POST", f"/fhir/Observation/{reply.body['id']}/$acknowledge",
                                  {"resourceType": "Parameters", "parameter": []})
    assert empty.status == 400 and "readBack" in empty.issue
    done = lab.physician.results("POST", f"/fhir/Observation/{reply.body['id']}/$acknowledge",
                                 {"resourceType": "Parameters", "parameter": [
                                     {"name": "readBack", "valueString": "Potasio 6.9 mmol/L, paciente X"}]})
    assert done.status == 200, done.body
    assert done.body["status"] == "completed" and done.body["received"]
    assert done.body["payload"] == [{"contentString": "Potasio 6.9 mmol/L, paciente X"}]
    again = lab.physician.results("POST", f"/fhir/Observation/{reply.body['id']}/$acknowledge",
                                  {"resourceType": "Parameters", "parameter": [{"name": "readBack",
                                                                                "valueString": "K 6.9"}]})
    assert again.status == 409 and "already acknowledged" in again.issue
    acknowledged = [e for e in lab.chain.world.world.published() if e["detail-type"] == "CriticalResultAcknowledged"]
    assert acknowledged[0]["detail"]["practitioner_id"] == lab.physician.practitioner_id
    summary = lab.physician.results("GET", "/fhir/Communication/$time-to-acknowledge", query={"clinic": CLUES})
    values = {p["name"]: p.get("valueInteger") for p in summary.body["parameter"]}
    assert values["alerts"] == 1 and values["acknowledged"] == 1 and values["open"] == 0


def test_a_normal_value_opens_no_alert_and_a_lab_flagged_critical_does(lab: Lab) -> None:
    normal = lab.report(lab_result(lab.patient, "2823-3", 4.2, "mmol/L", low=3.5, high=5.1))
    assert flag(normal.body) == "N" and alerts_of(lab.physician, normal.body["id"]) == []
    troponin = lab.report({**lab_result(lab.patient, "10839-9", 2.5, "ng/mL"),
                           "interpretation": [{"coding": [{"system": V3, "code": "HH"}]}]})
    assert flag(troponin.body) == "HH"  # no default limit: the laboratory's own critical flag counts
    assert len(alerts_of(lab.physician, troponin.body["id"])) == 1
    other_unit = lab.report(lab_result(lab.patient, "2345-7", 30, "mmol/L"))
    assert alerts_of(lab.physician, other_unit.body["id"]) == []  # not comparable with a limit in mg/dL


def test_a_tenant_sets_its_own_limits_and_on_call_list(lab: Lab, other_chain: Chain, physician: Staff) -> None:
    admin = Staff(lab.chain.tenant.admin, None)
    policy = admin.admin("GET", "/admin/critical-results")
    assert policy.status == 200
    potassium = next(limit for limit in policy.body["limits"] if limit["code"] == "2823-3")
    assert potassium == {"code": "2823-3", "units": ["mmol/L", "meq/L"], "low": 2.8, "high": 6.2, "source": "default"}
    on_call = lab.chain.staff("physician")
    bad = admin.admin("PUT", "/admin/critical-results", {"limits": [{"code": "2823-4", "units": ["mmol/L"],
                                                                     "high": 6.0}]})
    assert bad.status == 400 and bad.body["issue"][0]["expression"] == ["limits[0].code"]
    changed = admin.admin("PUT", "/admin/critical-results", {
        "acknowledgeWithinMinutes": 15, "limits": [{"code": "2823-3", "units": ["mmol/L"], "low": 3.0, "high": 6.0}],
        "onCall": {CLUES: [f"Practitioner/{on_call.practitioner_id}"]}})
    assert changed.status == 200, changed.body
    stale = admin.admin("PUT", "/admin/critical-results", {"acknowledgeWithinMinutes": 20},
                        headers={"If-Match": 'W/"0"'})
    assert stale.status == 412
    assert lab.physician.admin("PUT", "/admin/critical-results", {"acknowledgeWithinMinutes": 20}).status == 403
    from expediente import critical_policy

    critical_policy.forget()
    reply = lab.report(lab_result(lab.patient, "2823-3", 6.1, "mmol/L", order=lab.order()["id"]))
    assert flag(reply.body) == "HH"
    [alert] = alerts_of(lab.physician, reply.body["id"])
    deadline = next(e["valueDateTime"] for e in alert["extension"] if e["url"].endswith("/acknowledge-by"))
    sent = datetime.fromisoformat(alert["sent"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(deadline.replace("Z", "+00:00")) - sent == timedelta(minutes=15)
    other_admin = Staff(other_chain.tenant.admin, None)
    other = other_admin.admin("GET", "/admin/critical-results")
    assert next(x for x in other.body["limits"] if x["code"] == "2823-3")["high"] == 6.2  # another chain: defaults


def test_an_unacknowledged_alert_escalates_to_the_next_contact_until_acknowledged(lab: Lab) -> None:
    admin = Staff(lab.chain.tenant.admin, None)
    on_call = lab.chain.staff("physician")
    assert admin.admin("PUT", "/admin/critical-results", {
        "onCall": {CLUES: [f"Practitioner/{on_call.practitioner_id}"]}}).status == 200
    from expediente import critical_policy
    from functions.results.handler import escalate_all

    critical_policy.forget()
    reply = lab.report(lab_result(lab.patient, "2823-3", 2.1, "mmol/L", order=lab.order()["id"]))
    assert flag(reply.body) == "LL"
    lab.chain.world.world.published()
    assert escalate_all() == 0  # not due yet
    later = datetime.now(UTC) + timedelta(minutes=31)
    assert escalate_all(lambda: later) == 1
    escalated = [e["detail"] for e in lab.chain.world.world.published()
                 if e["detail-type"] == "CriticalResultEscalated"]
    assert [(e["level"], e["practitioner_id"]) for e in escalated] == [(1, on_call.practitioner_id)]
    assert escalate_all(lambda: later) == 0  # the new deadline is 30 minutes after the escalation
    assert escalate_all(lambda: later + timedelta(minutes=31)) == 1
    [alert] = alerts_of(lab.physician, reply.body["id"])
    assert alert["meta"]["versionId"] == "3"
    assert {r["reference"] for r in alert["recipient"]} == {f"Practitioner/{lab.physician.practitioner_id}",
                                                             f"Practitioner/{on_call.practitioner_id}"}
    ack = on_call.results("POST", f"/fhir/Observation/{reply.body['id']}/$acknowledge",
                          {"resourceType": "Parameters", "parameter": [{"name": "readBack", "valueString": "K 2.1"}]})
    assert ack.status == 200, ack.body
    assert escalate_all(lambda: later + timedelta(hours=5)) == 0  # acknowledged: never escalates again
    history = lab.physician.results("GET", f"/fhir/Communication/{alert['id']}/_history")
    assert history.body["total"] == 4


def test_the_results_function_escalates_when_the_schedule_invokes_it(lab: Lab) -> None:
    from functions.results.handler import lambda_handler
    from tests.support.aws import LambdaContext

    reply = lab.report(lab_result(lab.patient, "2823-3", 7.5, "mmol/L", order=lab.order()["id"]))
    assert flag(reply.body) == "HH"
    scheduled = {"version": "0", "id": "e1", "detail-type": "Scheduled Event", "source": "aws.events",
                 "account": "123456789012", "time": "2026-11-25T12:00:00Z", "region": "us-east-1",
                 "resources": ["arn:aws:events:us-east-1:123456789012:rule/critical-escalation"], "detail": {}}
    assert lambda_handler(scheduled, LambdaContext()) == {"escalated": 0}  # nothing is overdue yet

