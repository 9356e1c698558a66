from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Reply, World, invoke
from tests.support import logscan
from tests.support.aws import User, api_event
from tests.support.curp import make_curp


def patient_body(curp: str | None = None, *, family: str = "Pérez", second: str | None = "Gómez",
                 given: tuple[str, ...] = ("Juan",), birth: str = "1980-01-01", gender: str = "male",
                 **extra: Any) -> dict[str, Any]:
    name: dict[str, Any] = {"given": list(given)}
    if second:
        name["family"] = f"{family} {second}"
        name["_family"] = {"extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/humanname-fathers-family", "valueString": family},
            {"url": "http://hl7.org/fhir/StructureDefinition/humanname-mothers-family", "valueString": second}]}
    else:
        name["family"] = family
    body: dict[str, Any] = {"resourceType": "Patient", "name": [name], "birthDate": birth, "gender": gender, **extra}
    logscan.register(family, second, *given)  # never to appear in a log line (tests/support/logscan.py)
    if curp:
        body["identifier"] = [{"system": "urn:oid:2.16.840.1.113883.4.629", "value": curp}]
    return body


class PatientApi:
    def __init__(self, user: User):
        from functions.patients.handler import lambda_handler

        self.user = user
        self._handler = lambda_handler

    def call(self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> Reply:
        return invoke(self._handler, api_event(method, path, user=self.user, body=body, query=query,
                                               headers=headers))

    def create(self, body: dict[str, Any], **kw: Any) -> Reply:
        return self.call("POST", "/fhir/Patient", body, **kw)

    def read(self, pid: str) -> Reply:
        return self.call("GET", f"/fhir/Patient/{pid}")

    def search(self, **query: str) -> Reply:
        return self.call("GET", "/fhir/Patient", query=query)

    def update(self, pid: str, body: dict[str, Any], version: int | str | None) -> Reply:
        headers = {"If-Match": f'W/"{version}"'} if version is not None else {}
        return self.call("PUT", f"/fhir/Patient/{pid}", body, headers=headers)


@pytest.fixture
def tenant_a(world: World) -> str:
    return world.tenant("t-chain-a")


@pytest.fixture
def tenant_b(world: World) -> str:
    return world.tenant("t-chain-b")


@pytest.fixture
def as_role(world: World) -> Callable[..., PatientApi]:
    def make(role: str, tenant: str = "t-chain-a", **kwargs: Any) -> PatientApi:
        return PatientApi(User(tenant=tenant, role=role, **kwargs))

    return make


@pytest.fixture
def reception(tenant_a: str, as_role: Callable[..., PatientApi]) -> PatientApi:
    return as_role("reception", tenant_a)


__all__ = ["make_curp", "patient_body"]
