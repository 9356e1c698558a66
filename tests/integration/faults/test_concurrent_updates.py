"""Two clients update the same version of a resource at the same time: exactly one wins, the other gets 412.

The race is made deterministic: client A's request runs until the moment it sends its write
(``TransactWriteItems``), having read the version and checked its ``If-Match``; there, client B's whole
request runs and commits; then A's write goes out. A's condition (``version = n``) must fail and A
must answer 412 with nothing of its own stored. One test per versioned resource type with an update.
(The same race over HTTP with real threads against the local stack: tests/e2e/test_concurrency.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Reply
from tests.integration.faults.injector import Injector
from tests.integration.faults.scenarios import Clinic, if_match
from tests.integration.notes.conftest import Staff, condition_body, encounter_body
from tests.integration.prescriptions.conftest import PARACETAMOL, prescription, rx


@dataclass(frozen=True)
class Race:
    """A resource at version n and two different updates of it, both sent with ``If-Match: n``."""

    path: str
    read: Callable[[], Reply]
    update: Callable[[dict[str, Any], str], Reply]  # (resource as read, marker) → reply
    marker: Callable[[dict[str, Any]], Any]  # what tells A's change from B's in the stored resource


def _interleaved(injector: Injector, module: str, first: Callable[[], Reply], second: Callable[[], Reply]
                 ) -> tuple[Reply, Reply]:
    """Run ``first`` until its first TransactWriteItems, run ``second`` whole there, then let ``first`` go on."""
    app = __import__(f"functions.{module}.handler", fromlist=["app"]).app
    replies: list[Reply] = []

    def cut_in(call: str) -> None:
        if replies or call != "dynamodb.TransactWriteItems":
            return
        injector.recording = False  # the second request's own calls are not interrupted
        saved = dict(vars(app))  # one resolver serves both requests: keep the first's current event
        try:
            replies.append(second())
        finally:
            vars(app).clear()
            vars(app).update(saved)
            injector.recording = True

    injector.on_call = cut_in
    try:
        with injector.record():
            loser = first()
    finally:
        injector.on_call = None
    assert replies, f"the first request never wrote: {loser.status} {loser.body}"
    return loser, replies[0]


def _races(c: Clinic) -> dict[str, tuple[str, Race]]:
    def fhir(staff: Staff, module: str, path: str) -> Callable[..., Reply]:
        return lambda method, body=None, **kw: getattr(staff, module)(method, path, body, **kw)

    def created(staff_call: Callable[..., Reply], path: str, body: dict[str, Any]) -> str:
        reply = staff_call("POST", path, body)
        assert reply.status == 201, reply.body
        return str(reply.body["id"])

    def put_race(module: str, staff: Staff, path: str, change: Callable[[dict[str, Any], str], dict[str, Any]],
                 marker: Callable[[dict[str, Any]], Any], caller: Callable[..., Reply] | None = None) -> Race:
        call = caller or fhir(staff, module, path)
        return Race(path, lambda: call("GET"),
                    lambda current, mark: call("PUT", change(current, mark), headers=if_match(current)), marker)

    encounter = c.visit.encounter_id
    condition = created(c.physician.notes, "/fhir/Condition", condition_body(c.patient))
    note = c.draft_note()["id"]
    vital = created(c.nurse.results, "/fhir/Observation", {
        "resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{c.patient}"},
        "valueQuantity": {"value": 70, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}})
    draft = c.draft_prescription()["id"]
    allergy = created(lambda m, p, b: rx(c.physician, m, p, b), "/fhir/AllergyIntolerance", {
        "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{c.patient}"},
        "criticality": "high", "category": ["medication"],
        "code": {"coding": [{"system": "https://expediente.mx/fhir/CodeSystem/dci", "code": "ibuprofen"}]}})
    organization = c.chain.clinic_id
    practitioner = c.physician.practitioner_id
    order = c.lab_order()["id"]
    admin = c.admin
    phone = lambda current, mark: {**current, "telecom": [{"system": "phone", "value": mark}]}  # noqa: E731
    phone_of = lambda resource: resource["telecom"][0]["value"]  # noqa: E731

    def rx_call(path: str) -> Callable[..., Reply]:
        return lambda method, body=None, **kw: rx(c.physician, method, path, body, **kw)

    def order_call(method: str, body: Any = None, **kw: Any) -> Reply:
        path = f"/fhir/ServiceRequest/{order}"
        return c.lab.orders(method, path if method == "GET" else f"{path}/$status", body, **kw)

    return {
        "Patient": ("patients", put_race("patients", c.reception, f"/fhir/Patient/{c.patient}", phone, phone_of)),
        "Encounter": ("notes", put_race("notes", c.physician, f"/fhir/Encounter/{encounter}",
                                        lambda cur, mark: {**cur, "serviceType": {"text": mark}},
                                        lambda r: r["serviceType"]["text"])),
        "Condition": ("notes", put_race("notes", c.physician, f"/fhir/Condition/{condition}",
                                        lambda cur, mark: {**cur, "onsetString": mark}, lambda r: r["onsetString"])),
        "Composition": ("notes", put_race("notes", c.physician, f"/fhir/Composition/{note}",
                                          lambda cur, mark: {**cur, "title": mark}, lambda r: r["title"])),
        "Observation": ("results", put_race("results", c.nurse, f"/fhir/Observation/{vital}",
                                            lambda cur, mark: {**cur, "status": "corrected", "valueQuantity": {
                                                **cur["valueQuantity"], "value": 60 + int(mark[-2:])}},
                                            lambda r: r["valueQuantity"]["value"])),
        "MedicationRequest": ("prescriptions", put_race(
            "prescriptions", c.physician, f"/fhir/MedicationRequest/{draft}",
            lambda cur, mark: prescription(c.patient, PARACETAMOL, days=int(mark[-1]) + 1),
            lambda r: r["dosageInstruction"][0]["timing"]["repeat"]["boundsDuration"]["value"],
            caller=rx_call(f"/fhir/MedicationRequest/{draft}"))),
        "AllergyIntolerance": ("prescriptions", put_race(
            "prescriptions", c.physician, f"/fhir/AllergyIntolerance/{allergy}",
            lambda cur, mark: {**cur, "note": [{"text": mark}]}, lambda r: r["note"][0]["text"],
            caller=rx_call(f"/fhir/AllergyIntolerance/{allergy}"))),
        "Organization": ("admin", put_race("admin", admin, f"/fhir/Organization/{organization}",
                                           lambda cur, mark: {**cur, "alias": [mark]}, lambda r: r["alias"][0])),
        "Practitioner": ("admin", put_race("admin", admin, f"/fhir/Practitioner/{practitioner}", phone, phone_of)),
        "ServiceRequest": ("orders", Race(
            f"/fhir/ServiceRequest/{order}", lambda: order_call("GET"),
            lambda cur, mark: order_call("POST", {"resourceType": "Parameters", "parameter": [
                {"name": "status", "valueCode": "in-process" if mark.endswith("1") else "cancelled"},
                {"name": "reason", "valueString": f"Prueba {mark}"}]}, headers=if_match(cur)),
            lambda r: next(e["valueCode"] for e in r["extension"] if e["url"].endswith("/estado-orden")))),
    }


TYPES = ["Patient", "Encounter", "Condition", "Composition", "Observation", "MedicationRequest",
         "AllergyIntolerance", "Organization", "Practitioner", "ServiceRequest"]
_unused = encounter_body  # the Encounter race updates the visit's own encounter


@pytest.mark.parametrize("resource_type", TYPES)
def test_of_two_updates_of_the_same_version_exactly_one_wins_and_the_other_gets_412(
        resource_type: str, injector: Injector, clinic: Clinic) -> None:
    module, race = _races(clinic)[resource_type]
    current = race.read()
    assert current.status == 200, current.body
    version = int(current.body["meta"]["versionId"])

    loser, winner = _interleaved(injector, module, lambda: race.update(current.body, "5550000001"),
                                 lambda: race.update(current.body, "5550000002"))

    assert winner.status == 200, winner.body
    assert loser.status == 412, (loser.status, loser.body)
    assert loser.body["resourceType"] == "OperationOutcome" and loser.body["issue"][0]["code"] == "conflict"
    after = race.read()
    assert int(after.body["meta"]["versionId"]) == version + 1  # one new version, B's
    assert race.marker(after.body) == race.marker(winner.body)
