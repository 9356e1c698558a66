"""Patient/$everything (NOM-024 export, ARCO access) and the patient's own access trail, end to end under moto.

The record is made through the product in every domain: a visit (Encounter, Condition, vital signs),
a signed note, a lab order, an allergy and a signed prescription.
"""

# ruff: noqa: F811  (the notes world's fixtures are imported here and requested by name)

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlparse

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from tests.conftest import Reply
from tests.integration.notes.conftest import (  # noqa: F401  (fixtures, requested by name)
    Chain,
    Staff,
    admin_world,
    chain,
    open_visit,
    other_chain,
    patient_id,
    physician,
    reception,
)
from tests.integration.orders.conftest import lab_order
from tests.integration.prescriptions.conftest import created, prescription, rx, sign

ATC = "http://www.whocc.no/atc"
AMOXICILLIN_ATC = "J01CA04"


@dataclass
class Record:
    patient_id: str
    ids: dict[str, set[str]]  # resource type -> ids made for the patient


def make_record(physician: Staff, patient: str) -> Record:
    """A record in every domain; returns the ids made, by type."""
    ids: dict[str, set[str]] = {}
    visit = open_visit(physician, patient)
    ids["Encounter"] = {visit.encounter_id}
    ids["Condition"] = {visit.condition_id}
    ids["Observation"] = {ref.split("/")[1] for ref in visit.vitals.values()}
    note = physician.notes("POST", "/fhir/Composition", visit.historia_clinica())
    assert note.status == 201, note.body
    signed = physician.notes("POST", f"/fhir/Composition/{note.body['id']}/$sign", headers={"If-Match": 'W/"1"'})
    assert signed.status == 200, signed.body
    ids["Composition"] = {note.body["id"]}
    order = physician.orders("POST", "/fhir/ServiceRequest", lab_order(patient, visit.encounter_id))
    assert order.status == 201, order.body
    ids["ServiceRequest"] = {order.body["id"]}
    allergy = rx(physician, "POST", "/fhir/AllergyIntolerance", {
        "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{patient}"},
        "category": ["medication"], "code": {"coding": [{"system": ATC, "code": AMOXICILLIN_ATC}]}})
    assert allergy.status == 201, allergy.body
    ids["AllergyIntolerance"] = {allergy.body["id"]}
    request = created(physician, prescription(patient))
    signed_rx = sign(physician, request)
    assert signed_rx.status == 200, signed_rx.body
    ids["MedicationRequest"] = {request["id"]}
    return Record(patient, ids)


@pytest.fixture
def record(physician: Staff, patient_id: str) -> Record:
    return make_record(physician, patient_id)


def everything(staff: Staff, patient: str, **query: str) -> Reply:
    return staff.patients("GET", f"/fhir/Patient/{patient}/$everything", query=query or None)


def _by_mode(bundle: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def _assert_valid_r4(bundle: dict[str, Any]) -> None:
    Bundle.model_validate(bundle)
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        assert entry["fullUrl"].endswith(f"/fhir/{resource['resourceType']}/{resource['id']}")


def _narrative(note: dict[str, Any]) -> list[str]:
    return [s["text"]["div"] for s in note.get("section", []) if s.get("text")]


def test_patient_downloads_the_whole_record_as_one_valid_searchset(chain: Chain, record: Record) -> None:
    me = chain.patient_user(record.patient_id)
    reply = everything(me, record.patient_id)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith("application/fhir+json")
    bundle = reply.body
    assert bundle["type"] == "searchset"
    _assert_valid_r4(bundle)
    matches = _by_mode(bundle, "match")
    assert matches[0]["resourceType"] == "Patient" and matches[0]["id"] == record.patient_id
    found: dict[str, set[str]] = {}
    for resource in matches[1:]:
        found.setdefault(resource["resourceType"], set()).add(resource["id"])
    assert found == record.ids
    assert bundle["total"] == len(matches) == 1 + sum(len(v) for v in record.ids.values())
    assert not [link for link in bundle["link"] if link["relation"] == "next"]
    included = Counter(r["resourceType"] for r in _by_mode(bundle, "include"))
    assert included == {"Provenance": 2, "Medication": 1}  # the note's and the prescription's signatures
    provenance_targets = {r["target"][0]["reference"].split("/_history")[0] for r in _by_mode(bundle, "include")
                          if r["resourceType"] == "Provenance"}
    assert provenance_targets == {f"Composition/{next(iter(record.ids['Composition']))}",
                                  f"MedicationRequest/{next(iter(record.ids['MedicationRequest']))}"}
    note = next(r for r in matches if r["resourceType"] == "Composition")
    assert any("Cefalea" in div for div in _narrative(note))  # the patient reads their own notes' narrative
    for resource in matches[1:]:
        subject = resource.get("subject") or resource.get("patient")
        assert subject == {"reference": f"Patient/{record.patient_id}"} or \
            subject["reference"] == f"Patient/{record.patient_id}"


def test_physician_export_carries_narrative_and_admin_legal_copy_does_not(chain: Chain, physician: Staff,
                                                                         record: Record) -> None:
    admin = Staff(chain.tenant.admin, None)
    full = everything(physician, record.patient_id)
    legal = everything(admin, record.patient_id)
    assert full.status == legal.status == 200, (full.body, legal.body)
    _assert_valid_r4(legal.body)
    note = next(r for r in _by_mode(full.body, "match") if r["resourceType"] == "Composition")
    redacted = next(r for r in _by_mode(legal.body, "match") if r["resourceType"] == "Composition")
    assert _narrative(note) and not _narrative(redacted)
    assert any(s.get("code") == "REDACTED" for s in redacted["meta"]["security"])
    assert {r["id"] for r in _by_mode(full.body, "match")} == {r["id"] for r in _by_mode(legal.body, "match")}


def test_large_records_page_with_count_and_next_links_without_loss_or_repeats(chain: Chain,
                                                                               record: Record) -> None:
    me = chain.patient_user(record.patient_id)
    seen: list[str] = []
    pages = 0
    query: dict[str, str] = {"_count": "3"}
    while True:
        reply = everything(me, record.patient_id, **query)
        assert reply.status == 200, reply.body
        _assert_valid_r4(reply.body)
        matches = _by_mode(reply.body, "match")
        assert len(matches) <= 3
        seen += [f"{r['resourceType']}/{r['id']}" for r in matches]
        pages += 1
        following = [link["url"] for link in reply.body["link"] if link["relation"] == "next"]
        if not following:
            break
        assert "total" not in reply.body  # unknown until the last page
        query = dict(parse_qsl(urlparse(following[0]).query))
        assert query["_count"] == "3" and urlparse(following[0]).path.endswith(
            f"/fhir/Patient/{record.patient_id}/$everything")
    expected = 1 + sum(len(v) for v in record.ids.values())
    assert len(seen) == len(set(seen)) == expected
    assert pages >= expected // 3


def test_a_continuation_token_only_continues_its_own_export(chain: Chain, reception: Staff, physician: Staff,
                                                            record: Record) -> None:
    other = chain.register_patient(reception)
    first = everything(physician, record.patient_id, _count="2")
    token = dict(parse_qsl(urlparse(next(link["url"] for link in first.body["link"]
                                         if link["relation"] == "next")).query))["_page"]
    reused = everything(physician, other, _count="2", _page=token)
    assert reused.status == 400 and reused.body["issue"][0]["expression"] == ["_page"]
    assert everything(physician, record.patient_id, _page="not-a-token").status == 400


def test_since_and_type_narrow_the_export(chain: Chain, physician: Staff, record: Record) -> None:
    only = everything(physician, record.patient_id, _type="Condition,Observation")
    assert only.status == 200, only.body
    assert {r["resourceType"] for r in _by_mode(only.body, "match")} == {"Condition", "Observation"}
    assert not _by_mode(only.body, "include")
    later = everything(physician, record.patient_id, _since="2999-01-01T00:00:00Z")
    assert [r["resourceType"] for r in _by_mode(later.body, "match")] == ["Patient"]
    assert everything(physician, record.patient_id, _type="Practitioner").status == 400
    assert everything(physician, record.patient_id, _since="yesterday").status == 400
    assert everything(physician, record.patient_id, start="2020-01-01").status == 400


def test_only_allowed_roles_export_and_a_patient_only_their_own(chain: Chain, reception: Staff, record: Record,
                                                               other_chain: Chain) -> None:
    other = chain.register_patient(reception)
    me = chain.patient_user(record.patient_id)
    assert everything(me, other).status == 404  # another patient's record does not exist for me
    assert everything(chain.staff("nurse"), record.patient_id).status == 403
    assert everything(reception, record.patient_id).status == 403
    assert everything(Staff(chain.world.user(chain.tenant, "auditor"), None), record.patient_id).status == 403
    stranger = other_chain.staff("physician")
    reply = everything(stranger, record.patient_id)
    assert reply.status == 404 and record.patient_id in reply.issue  # exactly as a missing id


def test_export_is_audited_once_and_appears_in_the_patients_access_trail(chain: Chain, physician: Staff,
                                                                         reception: Staff, record: Record) -> None:
    other = chain.register_patient(reception)
    assert physician.patients("GET", f"/fhir/Patient/{other}").status == 200
    assert everything(physician, record.patient_id).status == 200
    me = chain.patient_user(record.patient_id)
    trail = me.admin("GET", "/fhir/AuditEvent", query={"patient": f"Patient/{record.patient_id}", "_count": "100"})
    assert trail.status == 200, trail.body
    events = [e["resource"] for e in trail.body["entry"]]
    for event in events:
        get_fhir_model_class("AuditEvent").model_validate(event)
        patients = {x["what"]["reference"] for x in event.get("entity", []) if x.get("what", {}).get(
            "reference", "").startswith("Patient/")}
        assert patients <= {f"Patient/{record.patient_id}"}, event  # nothing of other patients
        assert event["recorded"] and event["agent"][0]["who"]["display"]
    exports = [e for e in events if e["subtype"][0]["code"] == "$everything"
               and e["agent"][0]["who"].get("reference") == f"Practitioner/{physician.practitioner_id}"]
    assert len(exports) == 1, [e["subtype"] for e in events]
    agent = exports[0]["agent"][0]
    assert agent["role"] == [{"text": "physician"}] and agent["who"]["display"] == physician.caller.username
    assert any(entity["what"]["reference"] == f"Patient/{record.patient_id}" for entity in exports[0]["entity"])
    assert other not in str(events)
    # another patient's trail is not theirs to read
    assert me.admin("GET", "/fhir/AuditEvent", query={"patient": f"Patient/{other}"}).status in (403, 404) or \
        not me.admin("GET", "/fhir/AuditEvent", query={"patient": f"Patient/{other}"}).body.get("entry")
