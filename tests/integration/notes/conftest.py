"""Fixtures for the notes function end to end under moto.

A chain made by the operator command, one clinic, practitioners registered through the admin
API (each gets its KMS signing key there), users created by the chain's admin and signed in with
real Cognito ID tokens, and a patient registered through the patients API.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Reply, invoke
from tests.integration.admin.conftest import AdminWorld, Caller, Tenant, api_event
from tests.integration.admin.conftest import admin_world as admin_world  # the fixture, for this package
from tests.integration.patients.conftest import patient_body
from tests.support import logscan
from tests.support.curp import make_curp

CLUES = "HGIMB000151"
_PATIENTS = itertools.count()
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SECTION = "https://expediente.mx/fhir/CodeSystem/seccion-nota"
LOINC = "http://loinc.org"


def call(caller: Caller, handler: str, method: str, path: str, body: Any = None, *,
         query: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> Reply:
    module = __import__(f"functions.{handler}.handler", fromlist=["lambda_handler"])
    return invoke(module.lambda_handler, api_event(method, path, claims=caller.claims, body=body, query=query,
                                                   headers={**caller.headers, **(headers or {})}))


@dataclass
class Staff:
    """A user of the chain who works in notes (physician, nurse, reception, ...)."""

    caller: Caller
    practitioner_id: str | None

    def notes(self, method: str, path: str, body: Any = None, **kw: Any) -> Reply:
        return call(self.caller, "notes", method, path, body, **kw)

    def results(self, method: str, path: str, body: Any = None, **kw: Any) -> Reply:
        return call(self.caller, "results", method, path, body, **kw)

    def admin(self, method: str, path: str, body: Any = None, **kw: Any) -> Reply:
        return call(self.caller, "admin", method, path, body, **kw)

    def patients(self, method: str, path: str, body: Any = None, **kw: Any) -> Reply:
        return call(self.caller, "patients", method, path, body, **kw)

    def orders(self, method: str, path: str, body: Any = None, **kw: Any) -> Reply:
        return call(self.caller, "orders", method, path, body, **kw)


@dataclass
class Chain:
    world: AdminWorld
    tenant: Tenant
    clinic_id: str

    def staff(self, role: str, *, practitioner: bool = True, **kw: Any) -> Staff:
        practitioner_id = self.world.practitioner(self.tenant)["id"] if practitioner else None
        caller = self.world.user(self.tenant, role, clinic_ids=[CLUES], practitioner_id=practitioner_id, **kw)
        return Staff(caller, practitioner_id)

    def patient_user(self, patient_id: str) -> Staff:
        return Staff(self.world.user(self.tenant, "patient", patient_id=patient_id), None)

    def register_patient(self, by: Staff, *, gender: str = "male") -> str:
        n = next(_PATIENTS)
        curp = make_curp(sex="H" if gender == "male" else "M", consonants="RR" + "BCDFGHJKLMN"[n % 11],
                         differentiator=str(n // 11 % 10))
        reply = by.patients("POST", "/fhir/Patient", patient_body(curp, birth="1980-01-01", gender=gender))
        assert reply.status == 201, reply.body
        return str(reply.body["id"])


def make_chain(world: AdminWorld, name: str) -> Chain:
    tenant = world.tenant(name)
    clinic = world.clinic(tenant, CLUES)
    return Chain(world, tenant, clinic["id"])


@pytest.fixture
def chain(admin_world: AdminWorld) -> Chain:
    return make_chain(admin_world, "Red Clínica A")


@pytest.fixture
def other_chain(admin_world: AdminWorld) -> Chain:
    return make_chain(admin_world, "Red Clínica B")


@pytest.fixture
def physician(chain: Chain) -> Staff:
    return chain.staff("physician")


@pytest.fixture
def reception(chain: Chain) -> Staff:
    return chain.staff("reception", practitioner=False)


@pytest.fixture
def patient_id(chain: Chain, reception: Staff) -> str:
    return chain.register_patient(reception)


def encounter_body(patient_id: str, *, cls: str = "AMB", status: str = "in-progress", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Encounter", "status": status,
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls},
            "subject": {"reference": f"Patient/{patient_id}"}, **extra}


def condition_body(patient_id: str, code: str = "I10X", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Condition", "subject": {"reference": f"Patient/{patient_id}"},
            "code": {"coding": [{"system": ICD10, "code": code}]}, **extra}


def vital_body(patient_id: str, code: str, value: float, unit: str, encounter_id: str | None = None
               ) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-11-25T10:00:00Z",
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }
    if encounter_id:
        body["encounter"] = {"reference": f"Encounter/{encounter_id}"}
    return body


def section(code: str, text: str | None = "Sin hallazgos relevantes.", entries: list[str] | None = None,
            **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"code": {"coding": [{"system": SECTION, "code": code}]}, **extra}
    logscan.register(text)  # note text never appears in a log line (tests/support/logscan.py)
    if text is not None:
        out["text"] = {"status": "additional", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{text}</div>'}
    if entries:
        out["entry"] = [{"reference": ref} for ref in entries]
    return out


def note_body(patient_id: str, encounter_id: str, loinc: str, sections: list[dict[str, Any]],
              **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Composition", "status": "preliminary",
            "type": {"coding": [{"system": LOINC, "code": loinc}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "encounter": {"reference": f"Encounter/{encounter_id}"},
            "section": sections, **extra}


def historia_clinica_body(patient_id: str, encounter_id: str, condition_id: str, vitals: list[str]) -> dict[str, Any]:
    """A complete historia clínica (LOINC 34117-2) for a visit with vital signs and one diagnosis."""
    return note_body(patient_id, encounter_id, "34117-2", [
        section("antecedentes-heredofamiliares", "Madre con diabetes tipo 2."),
        section("antecedentes-personales-patologicos", "Niega alergias."),
        section("antecedentes-personales-no-patologicos", "No fuma."),
        section("padecimiento-actual", "Cefalea de 3 días."),
        section("interrogatorio-aparatos-sistemas", "Sin datos patológicos."),
        section("exploracion-fisica", "Consciente, orientado."),
        section("signos-vitales", None, vitals),
        section("resultados", None, emptyReason={"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "notstarted"}]}),
        section("diagnosticos", "Hipertensión esencial.", [f"Condition/{condition_id}"]),
        section("pronostico", "Bueno para la vida."),
        section("tratamiento", "Dieta hiposódica."),
    ])


@dataclass
class Visit:
    """An open encounter with a diagnosis and vital signs, ready for notes."""

    patient_id: str
    encounter_id: str
    condition_id: str
    vitals: dict[str, str]

    def historia_clinica(self) -> dict[str, Any]:
        return historia_clinica_body(self.patient_id, self.encounter_id, self.condition_id, list(self.vitals.values()))


def open_visit(staff: Staff, patient_id: str) -> Visit:
    encounter = staff.notes("POST", "/fhir/Encounter", encounter_body(patient_id))
    assert encounter.status == 201, encounter.body
    encounter_id = encounter.body["id"]
    condition = staff.notes("POST", "/fhir/Condition", condition_body(
        patient_id, encounter={"reference": f"Encounter/{encounter_id}"}))
    assert condition.status == 201, condition.body
    vitals = {}
    for code, value, unit in (("29463-7", 72.5, "kg"), ("8302-2", 170, "cm"), ("8867-4", 80, "/min")):
        reply = staff.results("POST", "/fhir/Observation", vital_body(patient_id, code, value, unit, encounter_id))
        assert reply.status == 201, reply.body
        vitals[code] = f"Observation/{reply.body['id']}"
    return Visit(patient_id, encounter_id, condition.body["id"], vitals)


@pytest.fixture
def visit(physician: Staff, patient_id: str) -> Visit:
    return open_visit(physician, patient_id)


Factory = Callable[..., Any]
