"""The audit trail as FHIR AuditEvent: auditor sees the tenant, a patient only their own record."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from expediente import audit
from expediente.audit import Action, AuditEntry
from expediente.context import context_from_event
from functions.admin.handler import lambda_handler
from tests.conftest import invoke
from tests.integration.admin.conftest import REGION, Caller, api_event
from tests.support.aws import table_name


def patient_access(caller: Caller, patient_id: str, action: Action = Action.READ, *,
                   when: datetime | None = None) -> None:
    """An access to a patient's record, audited the way the patients function audits it."""
    ctx = context_from_event(api_event("GET", f"/fhir/Patient/{patient_id}", claims=caller.claims))
    entry = AuditEntry("Patient", action, patient_id, (patient_id,))
    if when is None:
        audit.record(ctx, entry)
    else:
        boto3.client("dynamodb", region_name=REGION).put_item(
            TableName=table_name("audit"), Item=audit.audit_items(ctx, entry, now=when)[0])


def events(reply) -> list[dict]:
    assert reply.status == 200, reply.body
    Bundle.model_validate(reply.body)
    found = [e["resource"] for e in reply.body.get("entry", [])]
    for event in found:
        AuditEvent.model_validate(event)
    return found


def about(event: dict) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if "what" in e}


@pytest.fixture
def people(admin_world, chain_a):
    admin_world.clinic(chain_a, "HGIMB000151")
    doctor = admin_world.practitioner(chain_a)
    physician = admin_world.user(chain_a, "physician", clinic_ids=["HGIMB000151"], practitioner_id=doctor["id"])
    auditor = admin_world.user(chain_a, "auditor")
    pid = admin_world.patient(chain_a)
    patient = admin_world.user(chain_a, "patient", patient_id=pid)
    return physician, auditor, patient, pid


def test_auditor_searches_by_patient_and_agent(people):
    physician, auditor, _, pid = people
    patient_access(physician, pid)
    patient_access(physician, pid, Action.UPDATE)
    patient_access(physician, "pacientedos00002")
    by_patient = events(auditor.get("/fhir/AuditEvent", patient=f"Patient/{pid}"))
    assert len(by_patient) == 3
    assert all(about(e) == {f"Patient/{pid}"} for e in by_patient)
    assert [e["action"] for e in by_patient] == ["U", "R", "C"]  # newest first; C: the reception registered them
    agent = by_patient[0]["agent"][0]
    assert agent["who"]["identifier"]["value"] == physician.user_id
    assert agent["who"]["reference"] == f"Practitioner/{physician.claims['custom:practitioner_id']}"
    assert agent["location"]["display"] == "CLUES HGIMB000151"
    by_agent = events(auditor.get("/fhir/AuditEvent", agent=physician.user_id))
    assert {frozenset(about(e)) for e in by_agent} >= {frozenset({f"Patient/{pid}"}),
                                                      frozenset({"Patient/pacientedos00002"})}
    assert all(e["agent"][0]["who"]["identifier"]["value"] == physician.user_id for e in by_agent)
    both = events(auditor.get("/fhir/AuditEvent", patient="pacientedos00002", agent=physician.user_id))
    assert len(both) == 1


def test_date_bounds_and_sort(people):
    physician, auditor, _, _ = people
    for moment in ("2025-01-10T10:00:00", "2025-01-31T23:59:59", "2025-02-01T00:00:00"):
        patient_access(physician, "pacientetres0003", when=datetime.fromisoformat(moment).replace(tzinfo=UTC))

    def recorded(*dates: str, **query: str) -> list[str]:
        # agent= leaves out the auditor's own searches, which are about this patient's record too.
        event = api_event("GET", "/fhir/AuditEvent", claims=auditor.claims,
                          query={"patient": "pacientetres0003", "agent": physician.user_id, **query})
        if dates:  # repeated parameters, as API Gateway passes date=ge...&date=le...
            event["multiValueQueryStringParameters"]["date"] = list(dates)
            event["queryStringParameters"]["date"] = dates[-1]
        return [e["recorded"] for e in events(invoke(lambda_handler, event))]

    assert recorded("ge2025-01-10", "le2025-01-31") == ["2025-01-31T23:59:59.000Z", "2025-01-10T10:00:00.000Z"]
    assert recorded("gt2025-01-31") == ["2025-02-01T00:00:00.000Z"]
    assert recorded("lt2025-01-10T10:00:00Z") == []
    assert recorded("2025-01") == ["2025-01-31T23:59:59.000Z", "2025-01-10T10:00:00.000Z"]
    assert recorded("ge2025-01-31T17:59:59-06:00", _sort="date") == ["2025-01-31T23:59:59.000Z",
                                                                      "2025-02-01T00:00:00.000Z"]
    assert recorded(_sort="date")[0] == "2025-01-10T10:00:00.000Z"


def test_a_physician_may_not_read_the_audit_trail(people):
    physician, _, _, _ = people
    reply = physician.get("/fhir/AuditEvent")
    assert reply.status == 403
    assert reply.body["resourceType"] == "OperationOutcome"


def test_a_patient_sees_only_records_about_their_own_record(people):
    physician, _, patient, pid = people
    patient_access(physician, pid)
    patient_access(physician, "pacientedos00002")
    own = events(patient.get("/fhir/AuditEvent"))
    assert own
    assert all(about(e) == {f"Patient/{pid}"} for e in own)
    assert events(patient.get("/fhir/AuditEvent", patient="Patient/pacientedos00002")) == []
    assert events(patient.get("/fhir/AuditEvent", agent=physician.user_id))[0]["action"] == "R"


def test_reading_the_trail_is_itself_audited(people):
    physician, auditor, patient, pid = people
    patient_access(physician, pid)
    events(auditor.get("/fhir/AuditEvent", patient=pid))
    newest = events(patient.get("/fhir/AuditEvent", _count="1"))[0]
    assert newest["agent"][0]["who"]["identifier"]["value"] == auditor.user_id
    assert newest["subtype"][0]["code"] == "search-type"
    assert any("AuditEvent search on: patient" in e.get("description", "") for e in newest["entity"])


def test_audit_search_pages(people):
    physician, auditor, _, pid = people
    for _ in range(3):
        patient_access(physician, pid)
    first = auditor.get("/fhir/AuditEvent", patient=pid, _count="2")
    assert len(events(first)) == 2
    next_url = next(link["url"] for link in first.body["link"] if link["relation"] == "next")
    token = next_url.split("_page=")[1]
    rest = auditor.get("/fhir/AuditEvent", patient=pid, _count="2", _page=token)
    assert len(events(rest)) == 2  # the third access and the patient's registration
    assert "next" not in {link["relation"] for link in rest.body["link"]}
    other_patient = auditor.get("/fhir/AuditEvent", patient="pacientedos00002", _count="2", _page=token)
    assert other_patient.status == 400


@pytest.mark.parametrize(
    ("query", "expression"),
    [({"date": "yesterday"}, "date"), ({"date": "ne2025-01-01"}, "date"), ({"_sort": "agent"}, "_sort"),
     ({"subtype": "read"}, "subtype"), ({"patient": "Patient/"}, "patient"), ({"date": "2025-01-01T10:00"}, "date")],
)
def test_bad_audit_queries_are_400_naming_the_parameter(people, query, expression):
    _, auditor, _, _ = people
    reply = auditor.get("/fhir/AuditEvent", **query)
    assert reply.status == 400
    assert reply.body["issue"][0]["expression"] == [expression]
