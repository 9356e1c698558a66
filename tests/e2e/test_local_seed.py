"""The demo data: made through the product, listed in stack.json, usable by the fixtures."""

from __future__ import annotations

import json

import jwt
import pytest

from infra.definitions import ROLES, SIGNING_ROLES
from local.seed import DEMO_TENANTS

pytestmark = pytest.mark.e2e


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_stack_file_lists_the_seeded_tenants_clinics_and_users(api, local_stack):
    tenants = api.tenants()
    document = json.loads(local_stack.stack_file.read_text(encoding="utf-8"))
    assert [t["id"] for t in document["tenants"]] == [t.id for t in tenants]
    assert [len(t["clinics"]) for t in document["tenants"]] == [len(d.clinics) for d in DEMO_TENANTS]
    for tenant, demo in zip(document["tenants"], DEMO_TENANTS, strict=True):
        assert tenant["name"] == demo.name
        assert [c["clues"] for c in tenant["clinics"]] == list(demo.clinics)
        assert all(c["id"] and c["name"] for c in tenant["clinics"])
        assert sorted(u["role"] for u in tenant["users"]) == sorted(ROLES)
        assert all(set(u) >= {"username", "password", "role"} for u in tenant["users"])


def test_every_seeded_user_can_log_in_with_the_listed_password(api):
    for tenant in api.tenants():
        for user in tenant.users:
            claims = claims_of(api.token(user.username, user.password))
            assert claims["cognito:groups"] == [user.role]
            assert claims["custom:tenant_id"] == tenant.id


def test_seeded_accounts_are_linked_to_their_records(api):
    for tenant in api.tenants():
        for role in SIGNING_ROLES:
            user = tenant.user(role)
            assert claims_of(api.token(user.username, user.password))["custom:practitioner_id"] == user.practitioner_id
        patient = tenant.user("patient")
        assert patient.patient_id in tenant.patient_ids
        assert claims_of(api.token(patient.username, patient.password))["custom:patient_id"] == patient.patient_id
        clinician = tenant.user("physician")
        clinics = claims_of(api.token(clinician.username, clinician.password))["custom:clinic_ids"].split(",")
        assert clinics == [clinic.clues for clinic in tenant.clinics]


def test_as_user_reaches_the_api_within_the_users_tenant_only(api):
    clinic = api.tenant(0).clinics[0]
    own = api.as_user("admin", tenant_index=0).get(f"/fhir/Organization/{clinic.id}")
    assert own.status_code == 200, own.text
    assert clinic.clues in [identifier["value"] for identifier in own.json()["identifier"]]
    # Decision 3: another tenant's resource answers exactly like a missing one.
    foreign = api.as_user("admin", tenant_index=1).get(f"/fhir/Organization/{clinic.id}")
    assert foreign.status_code == 404
    assert foreign.json()["resourceType"] == "OperationOutcome"
