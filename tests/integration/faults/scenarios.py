"""One representative request for each write route of each domain, repeatable any number of times.

A :class:`Scenario`'s ``prepare`` sets up what the request needs (through the product, with no fault
injected) and returns the request itself; it is called again before every run, so an update reads
the current version for its ``If-Match`` and a signature signs a fresh draft.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.conftest import Reply
from tests.integration.hl7v2.test_hl7v2 import oru, placer_of, potassium, send
from tests.integration.notes.conftest import (
    CLUES,
    Chain,
    Staff,
    Visit,
    condition_body,
    encounter_body,
)
from tests.integration.orders.conftest import lab_order
from tests.integration.patients.conftest import patient_body
from tests.integration.prescriptions.conftest import PARACETAMOL, prescription, rx
from tests.integration.results.test_laboratory import lab_result
from tests.support.curp import make_curp

_CURPS = ("".join(c) for c in itertools.product("BCDFGHKLMNPQSTVWXZ", repeat=3))
_USERS = itertools.count(1)


def fresh_curp() -> str:
    return make_curp(prefix="FAUL", consonants=next(_CURPS))


@dataclass(frozen=True)
class Scenario:
    route: str  # "METHOD path" as the route table names it
    ok: int  # the status of a full success
    prepare: Callable[[], Callable[[], Reply]]
    accepted: Callable[[Reply], bool] = lambda reply: True  # HL7: the ACK must also say AA


@dataclass
class Clinic:
    """A chain with staff, a patient and an open visit: what every write route needs."""

    chain: Chain
    physician: Staff
    reception: Staff
    nurse: Staff
    lab: Staff
    pharmacist: Staff
    patient: str
    visit: Visit

    @property
    def admin(self) -> Staff:
        return Staff(self.chain.tenant.admin, None)

    def current(self, staff_call: Callable[..., Reply], path: str) -> dict[str, Any]:
        reply = staff_call("GET", path)
        assert reply.status == 200, reply.body
        return dict(reply.body)

    def draft_note(self) -> dict[str, Any]:
        reply = self.physician.notes("POST", "/fhir/Composition", self.visit.historia_clinica())
        assert reply.status == 201, reply.body
        return dict(reply.body)

    def lab_order(self) -> dict[str, Any]:
        reply = self.physician.orders("POST", "/fhir/ServiceRequest", lab_order(self.patient, self.visit.encounter_id))
        assert reply.status == 201, reply.body
        return dict(reply.body)

    def new_patient(self) -> str:
        reply = self.reception.patients("POST", "/fhir/Patient", patient_body(fresh_curp()))
        assert reply.status == 201, reply.body
        return str(reply.body["id"])

    def draft_prescription(self, patient: str | None = None) -> dict[str, Any]:
        reply = rx(self.physician, "POST", "/fhir/MedicationRequest", prescription(patient or self.patient, PARACETAMOL,
                                                                                      packages=1))
        assert reply.status == 201, reply.body
        return dict(reply.body)

    def signed_prescription(self, patient: str | None = None) -> dict[str, Any]:
        draft = self.draft_prescription(patient)
        signed = rx(self.physician, "POST", f"/fhir/MedicationRequest/{draft['id']}/$sign",
                    {"resourceType": "Parameters", "parameter": [
                        {"name": "overrideReason", "valueString": "Dosis revisada; pruebas de fallas"}]},
                    headers={"If-Match": f'W/"{draft["meta"]["versionId"]}"'})
        assert signed.status == 200, signed.body
        return dict(signed.body)


def if_match(resource: dict[str, Any]) -> dict[str, str]:
    return {"If-Match": f'W/"{resource["meta"]["versionId"]}"'}


def scenarios(c: Clinic) -> list[Scenario]:
    """Every write route the harness exercises, in domain order."""

    def create_patient() -> Callable[[], Reply]:
        body = patient_body(fresh_curp())
        return lambda: c.reception.patients("POST", "/fhir/Patient", body)

    def update_patient() -> Callable[[], Reply]:
        current = c.current(c.reception.patients, f"/fhir/Patient/{c.patient}")
        body = {**current, "telecom": [{"system": "phone", "value": f"55{next(_USERS):08d}"}]}
        return lambda: c.reception.patients("PUT", f"/fhir/Patient/{c.patient}", body, headers=if_match(current))

    def create_encounter() -> Callable[[], Reply]:
        return lambda: c.physician.notes("POST", "/fhir/Encounter", encounter_body(c.patient))

    def update_encounter() -> Callable[[], Reply]:
        current = c.current(c.physician.notes, f"/fhir/Encounter/{c.visit.encounter_id}")
        body = {**current, "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActPriority",
                                                    "code": "R"}]}}
        return lambda: c.physician.notes("PUT", f"/fhir/Encounter/{c.visit.encounter_id}", body,
                                         headers=if_match(current))

    def create_condition() -> Callable[[], Reply]:
        body = condition_body(c.patient, encounter={"reference": f"Encounter/{c.visit.encounter_id}"})
        return lambda: c.physician.notes("POST", "/fhir/Condition", body)

    def create_note() -> Callable[[], Reply]:
        body = c.visit.historia_clinica()
        return lambda: c.physician.notes("POST", "/fhir/Composition", body)

    def sign_note() -> Callable[[], Reply]:
        note = c.draft_note()
        return lambda: c.physician.notes("POST", f"/fhir/Composition/{note['id']}/$sign",
                                         {"resourceType": "Parameters", "parameter": []}, headers=if_match(note))

    def create_order() -> Callable[[], Reply]:
        body = lab_order(c.patient, c.visit.encounter_id)
        return lambda: c.physician.orders("POST", "/fhir/ServiceRequest", body)

    def order_status() -> Callable[[], Reply]:
        order = c.lab_order()
        body = {"resourceType": "Parameters", "parameter": [{"name": "status", "valueCode": "in-process"}]}
        return lambda: c.lab.orders("POST", f"/fhir/ServiceRequest/{order['id']}/$status", body,
                                    headers=if_match(order))

    def vital_sign() -> Callable[[], Reply]:
        body = {"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": f"Patient/{c.patient}"}, "encounter": {"reference":
                                                                               f"Encounter/{c.visit.encounter_id}"},
                "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}
        return lambda: c.nurse.results("POST", "/fhir/Observation", body)

    def critical_result() -> Callable[[], Reply]:
        order = c.lab_order()
        body = lab_result(c.patient, "2823-3", 6.9, "mmol/L", order=order["id"], low=3.5, high=5.1)
        return lambda: c.lab.results("POST", "/fhir/Observation", body)

    def hl7_oru() -> Callable[[], Reply]:
        order = c.lab_order()
        text = oru(patient=c.patient, placer=placer_of(order), obx=[potassium("4.2")])
        return lambda: send(c.lab, text)

    # A prescription is checked against every current prescription of its patient (one kms.Decrypt per data
    # key met): each prescription request is for a patient of its own, so every run makes the same calls.
    def prescribe() -> Callable[[], Reply]:
        body = prescription(c.new_patient(), PARACETAMOL, packages=1)
        return lambda: rx(c.physician, "POST", "/fhir/MedicationRequest", body)

    def sign_prescription() -> Callable[[], Reply]:
        draft = c.draft_prescription(c.new_patient())
        return lambda: rx(c.physician, "POST", f"/fhir/MedicationRequest/{draft['id']}/$sign",
                          {"resourceType": "Parameters", "parameter": [
                              {"name": "overrideReason", "valueString": "Dosis revisada; pruebas de fallas"}]},
                          headers=if_match(draft))

    def dispense() -> Callable[[], Reply]:
        signed = c.signed_prescription(c.new_patient())
        body = {"resourceType": "MedicationDispense",
                "authorizingPrescription": [{"reference": f"MedicationRequest/{signed['id']}"}]}
        return lambda: rx(c.pharmacist, "POST", "/fhir/MedicationDispense", body)

    def create_practitioner() -> Callable[[], Reply]:
        from tests.integration.admin.conftest import CEDULAS, practitioner

        body = practitioner(str(next(CEDULAS)))
        return lambda: c.admin.admin("POST", "/fhir/Practitioner", body)

    def create_user() -> Callable[[], Reply]:
        username = f"fault{next(_USERS)}.{c.chain.tenant.id}"
        body = {"username": username, "email": f"{username}@example.com", "role": "reception", "clinic_ids": [CLUES]}
        return lambda: c.admin.admin("POST", "/admin/users", body, headers={"Content-Type": "application/json"})

    return [
        Scenario("POST /fhir/Patient", 201, create_patient),
        Scenario("PUT /fhir/Patient/{id}", 200, update_patient),
        Scenario("POST /fhir/Encounter", 201, create_encounter),
        Scenario("PUT /fhir/Encounter/{id}", 200, update_encounter),
        Scenario("POST /fhir/Condition", 201, create_condition),
        Scenario("POST /fhir/Composition", 201, create_note),
        Scenario("POST /fhir/Composition/{id}/$sign", 200, sign_note),
        Scenario("POST /fhir/ServiceRequest", 201, create_order),
        Scenario("POST /fhir/ServiceRequest/{id}/$status", 200, order_status),
        Scenario("POST /fhir/Observation (vital sign)", 201, vital_sign),
        Scenario("POST /fhir/Observation (critical laboratory result)", 201, critical_result),
        Scenario("POST /hl7v2 (ORU^R01)", 200, hl7_oru, accepted=lambda reply: "MSA|AA|" in str(reply.body)),
        Scenario("POST /fhir/MedicationRequest", 201, prescribe),
        Scenario("POST /fhir/MedicationRequest/{id}/$sign", 200, sign_prescription),
        Scenario("POST /fhir/MedicationDispense", 201, dispense),
        Scenario("POST /fhir/Practitioner", 201, create_practitioner),
        Scenario("POST /admin/users", 201, create_user),
    ]
