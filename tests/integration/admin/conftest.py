"""Fixtures for the admin function end to end under moto.

Built on the shared ``world`` fixture (tests/conftest.py: tables from infra.definitions.TABLES,
the app KMS key, environment per definitions, caches reset). Added here: a Cognito user pool
built from definitions.ROLES and USER_ATTRIBUTES, the ``StackInfo`` the operator command
needs, and tenant/user factories that go through the product: ``ops.create_tenant`` for a
tenant and its first admin, ``POST /admin/users`` for everyone else. Claims come from real
Cognito ID tokens (USER_PASSWORD_AUTH), rendered the way API Gateway's REST Cognito
authorizer passes them: every value a string, ``cognito:groups`` comma-joined.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import jwt
import pytest

from infra import definitions
from ops.tenants import CreatedTenant, StackInfo, create_tenant
from tests.conftest import Reply, World, invoke
from tests.support import aws as support

REGION = support.REGION
PASSWORD = "Prueba-Segura-2026!"
CLUES_A = ("HGIMB000151", "HGIMB000163", "HGCRO000032")
CEDULAS = itertools.count(1_000_001)


def create_user_pool(cognito: Any) -> tuple[str, str]:
    """A pool like the stateful stack's: groups = roles, custom attributes, a USER_PASSWORD_AUTH client."""
    pool_id = cognito.create_user_pool(
        PoolName="expediente-test",
        UsernameConfiguration={"CaseSensitive": False},
        AdminCreateUserConfig={"AllowAdminCreateUserOnly": True},
        Schema=[{"Name": attribute, "AttributeDataType": "String", "Mutable": True,
                 "StringAttributeConstraints": {"MinLength": "0", "MaxLength": "2048"}}
                for attribute in definitions.USER_ATTRIBUTES],
    )["UserPool"]["Id"]
    for role in definitions.ROLES:
        cognito.create_group(UserPoolId=pool_id, GroupName=role)
    client_id = cognito.create_user_pool_client(
        UserPoolId=pool_id, ClientName="expediente-test", GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    return pool_id, client_id


def api_event(method: str, path: str, *, claims: dict[str, str] | None, body: Any = None,
              query: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A real API Gateway REST proxy event; ``claims`` as the Cognito authorizer passes them (None: public)."""
    event = support.api_event(method, path, user=None, body=body, query=query, headers=headers)
    if claims is not None:
        event["requestContext"]["authorizer"] = {"claims": dict(claims)}
    return event


def authorizer_claims(id_token: str) -> dict[str, str]:
    """An ID token's claims as API Gateway's REST Cognito authorizer renders them (all strings)."""
    payload = jwt.decode(id_token, options={"verify_signature": False})
    return {key: ",".join(map(str, value)) if isinstance(value, list) else str(value)
            for key, value in payload.items()}


@dataclass
class Caller:
    """Someone calling the admin function with a verified identity (or none)."""

    claims: dict[str, str] | None
    username: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> Reply:
        from functions.admin.handler import lambda_handler

        merged = {**self.headers, **(headers or {})}
        return invoke(lambda_handler, api_event(method, path, claims=self.claims, body=body, query=query,
                                                headers=merged))

    def get(self, path: str, **query: str) -> Reply:
        return self.call("GET", path, query=query or None)

    def post(self, path: str, body: Any, **kwargs: Any) -> Reply:
        return self.call("POST", path, body, **kwargs)

    @property
    def user_id(self) -> str:
        assert self.claims is not None
        return self.claims["sub"]


@dataclass
class Tenant:
    created: CreatedTenant
    admin: Caller

    @property
    def id(self) -> str:
        return self.created.tenant_id

    @property
    def chain_id(self) -> str:
        return self.created.organization_id


@dataclass
class AdminWorld:
    world: World
    stack: StackInfo
    client_id: str
    session: boto3.Session = field(default_factory=lambda: boto3.Session(region_name=REGION))
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def cognito(self) -> Any:
        return self.session.client("cognito-idp")

    def login(self, username: str, password: str = PASSWORD) -> Caller:
        """Sign in with USER_PASSWORD_AUTH and keep the ID token's claims."""
        result = self.cognito.initiate_auth(ClientId=self.client_id, AuthFlow="USER_PASSWORD_AUTH",
                                            AuthParameters={"USERNAME": username, "PASSWORD": password})
        return Caller(authorizer_claims(result["AuthenticationResult"]["IdToken"]), username)

    def tenant(self, name: str = "Clínicas Demo") -> Tenant:
        """A tenant made by the operator command, with its first admin signed in."""
        number = next(self._names)
        created = create_tenant(stack=self.stack, name=name, admin_username=f"admin{number}.chain",
                                admin_email=f"admin{number}@example.com", admin_password=PASSWORD,
                                session=self.session)
        return Tenant(created, self.login(created.admin_username))

    def clinic(self, tenant: Tenant, clues: str, name: str = "Clínica Centro", **extra: Any) -> dict[str, Any]:
        reply = tenant.admin.post("/fhir/Organization", organization(clues, name, tenant.chain_id, **extra))
        assert reply.status == 201, reply.body
        return dict(reply.body)

    def practitioner(self, tenant: Tenant, family: str = "Hernández Ortega", given: str = "Lucía") -> dict[str, Any]:
        reply = tenant.admin.post("/fhir/Practitioner", practitioner(str(next(CEDULAS)), family, given))
        assert reply.status == 201, reply.body
        return dict(reply.body)

    def patient(self, tenant: Tenant) -> str:
        """A patient registered in the tenant through the patients function (by its reception); returns the id."""
        from functions.patients.handler import lambda_handler

        reception = support.User(tenant=tenant.id, role="reception")
        body = {"resourceType": "Patient", "name": [{"family": "Paciente", "given": ["Prueba"]}],
                "birthDate": "1980-01-01", "gender": "female"}
        reply = invoke(lambda_handler, support.api_event("POST", "/fhir/Patient", user=reception, body=body))
        assert reply.status == 201, reply.body
        return str(reply.body["id"])

    def user(self, tenant: Tenant, role: str, *, clinic_ids: list[str] | None = None,
             practitioner_id: str | None = None, patient_id: str | None = None) -> Caller:
        """A user created by the tenant's admin through ``POST /admin/users``, then signed in."""
        username = f"{role}{next(self._names)}.{tenant.id}"
        body: dict[str, Any] = {"username": username, "email": f"{username}@example.com", "role": role,
                                "clinic_ids": clinic_ids or []}
        if practitioner_id:
            body["practitioner_id"] = practitioner_id
        if patient_id:
            body["patient_id"] = patient_id
        reply = tenant.admin.post("/admin/users", body, headers={"Content-Type": "application/json"})
        assert reply.status == 201, reply.body
        self.cognito.admin_set_user_password(UserPoolId=self.stack.user_pool_id, Username=username,
                                             Password=PASSWORD, Permanent=True)
        return self.login(username)


def organization(clues: str, name: str, chain_id: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Organization", "name": name, "active": True,
                            "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.631", "value": clues}], **extra}
    if chain_id:
        body["partOf"] = {"reference": f"Organization/{chain_id}"}
    return body


def practitioner(cedula: str, family: str = "Hernández Ortega", given: str = "Lucía", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "active": True,
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.215.12.18", "value": cedula}],
            "name": [{"use": "official", "family": family, "given": given.split()}], **extra}


@pytest.fixture
def admin_world(world: World, monkeypatch: pytest.MonkeyPatch) -> AdminWorld:
    """The shared moto world plus the Cognito pool, with the admin function's environment."""
    pool_id, client_id = create_user_pool(boto3.client("cognito-idp", region_name=REGION))
    monkeypatch.setenv("USER_POOL_ID", pool_id)
    monkeypatch.setenv("USER_POOL_CLIENT_ID", client_id)
    support.reset_caches()
    stack = StackInfo(
        region=REGION, user_pool_id=pool_id, user_pool_client_id=client_id, key_app_arn=world.key_arn,
        **{StackInfo.table_field(t.id): support.table_name(t.id) for t in definitions.TABLES},
    )
    return AdminWorld(world, stack, client_id)


@pytest.fixture
def chain_a(admin_world: AdminWorld) -> Tenant:
    return admin_world.tenant("Red Clínica A")


@pytest.fixture
def chain_b(admin_world: AdminWorld) -> Tenant:
    return admin_world.tenant("Red Clínica B")


@pytest.fixture
def anonymous() -> Caller:
    return Caller(None)
