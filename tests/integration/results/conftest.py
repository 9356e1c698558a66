"""Fixtures for the results function end to end under moto.

Built on the shared ``world`` fixture. Everything an Observation refers to is made through the
product: the clinic by the admin function (``POST /fhir/Organization``), the patients by the
patients function, encounters by the notes function.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Reply, World, invoke
from tests.integration.admin.conftest import organization
from tests.integration.patients.conftest import patient_body
from tests.support.aws import User, api_event
from tests.support.curp import make_curp

TENANT_A, TENANT_B = "t-chain-a", "t-chain-b"
CLUES = "HGIMB000151"  # the clinic of every test user (tests.support.aws.User default)
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
# one CURP per registered patient: the internal consonants vary (one record per CURP per tenant)
_CONSONANTS: Iterator[str] = ("".join(c) for c in itertools.product("BCDFGHKLMN", repeat=3))


def quantity(value: float, code: str) -> dict[str, Any]:
    return {"value": value, "system": UCUM, "code": code}


def vital(code: str, value: float, unit: str, patient: str, **extra: Any) -> dict[str, Any]:
    """A vital-sign Observation body as a client sends it (no category: the server sets it)."""
    return {"resourceType": "Observation", "code": {"coding": [{"system": LOINC, "code": code}]},
            "subject": {"reference": f"Patient/{patient}"}, "valueQuantity": quantity(value, unit), **extra}


def blood_pressure(patient: str, systolic: float = 120, diastolic: float = 80, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
            "subject": {"reference": f"Patient/{patient}"},
            "component": [
                {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": quantity(systolic,
                                                                                                      "mm[Hg]")},
                {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": quantity(diastolic,
                                                                                                      "mm[Hg]")},
            ], **extra}


class Api:
    """One user calling the results function (and, to set up, the patients and notes functions)."""

    def __init__(self, user: User):
        self.user = user

    def call(self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> Reply:
        from functions.results.handler import lambda_handler

        return invoke(lambda_handler, api_event(method, path, user=self.user, body=body, query=query,
                                                headers=headers))

    def create(self, body: dict[str, Any], **kw: Any) -> Reply:
        return self.call("POST", "/fhir/Observation", body, **kw)

    def read(self, oid: str) -> Reply:
        return self.call("GET", f"/fhir/Observation/{oid}")

    def vread(self, oid: str, version: int | str) -> Reply:
        return self.call("GET", f"/fhir/Observation/{oid}/_history/{version}")

    def history(self, oid: str) -> Reply:
        return self.call("GET", f"/fhir/Observation/{oid}/_history")

    def search(self, **query: str) -> Reply:
        return self.call("GET", "/fhir/Observation", query=query)

    def update(self, oid: str, body: dict[str, Any], version: int | str | None) -> Reply:
        headers = {"If-Match": f'W/"{version}"'} if version is not None else {}
        return self.call("PUT", f"/fhir/Observation/{oid}", body, headers=headers)


@dataclass
class Clinic:
    """A tenant with its clinic registered, and a way to add patients and encounters to it."""

    tenant: str

    def patient(self) -> str:
        from functions.patients.handler import lambda_handler

        registrar = User(tenant=self.tenant, role="reception")
        body = patient_body(make_curp(consonants=next(_CONSONANTS)))
        reply = invoke(lambda_handler, api_event("POST", "/fhir/Patient", user=registrar, body=body))
        assert reply.status == 201, reply.body
        return str(reply.body["id"])

    def encounter(self, patient: str) -> str:
        from functions.notes.handler import lambda_handler

        nurse = User(tenant=self.tenant, role="nurse")
        body = {"resourceType": "Encounter", "status": "in-progress",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": f"Patient/{patient}"}}
        reply = invoke(lambda_handler, api_event("POST", "/fhir/Encounter", user=nurse, body=body))
        assert reply.status == 201, reply.body
        return str(reply.body["id"])

    def as_role(self, role: str, **kwargs: Any) -> Api:
        return Api(User(tenant=self.tenant, role=role, **kwargs))


def _register_clinic(tenant: str) -> None:
    from functions.admin.handler import lambda_handler

    admin = User(tenant=tenant, role="admin")
    reply = invoke(lambda_handler, api_event("POST", "/fhir/Organization", user=admin,
                                             body=organization(CLUES, "Clínica Centro")))
    assert reply.status == 201, reply.body


@pytest.fixture
def clinic_a(world: World) -> Clinic:
    _register_clinic(world.tenant(TENANT_A))
    return Clinic(TENANT_A)


@pytest.fixture
def clinic_b(world: World) -> Clinic:
    _register_clinic(world.tenant(TENANT_B))
    return Clinic(TENANT_B)


@pytest.fixture
def nurse(clinic_a: Clinic) -> Api:
    return clinic_a.as_role("nurse", practitioner_id="nurse-practitioner-1")


@pytest.fixture
def patient(clinic_a: Clinic) -> str:
    return clinic_a.patient()


@pytest.fixture
def as_role(clinic_a: Clinic) -> Callable[..., Api]:
    return clinic_a.as_role


# The laboratory tests use the notes world (a chain made by the operator command, staff with practitioners).
from tests.integration.notes.conftest import (  # noqa: E402, F401  (fixtures, requested by name)
    admin_world,
    chain,
    other_chain,
    physician,
    reception,
)
