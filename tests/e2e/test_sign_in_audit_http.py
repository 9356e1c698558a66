"""Sign-ins audited on the local stack as on AWS (decision 0029): the user pool's triggers record each
attempt and success, and a refused password reaches the failed-sign-in audit as Cognito's sign-in
event log would deliver it; the tenant's auditor reads all three through ``GET /fhir/AuditEvent``."""

from __future__ import annotations

from typing import Any

import boto3
import jwt
import pytest
from botocore.exceptions import ClientError

from local.auth import password_login
from local.aws import LocalAws

pytestmark = pytest.mark.e2e


def _login(local_aws: LocalAws, username: str, password: str) -> str:
    return password_login(endpoint=local_aws.endpoint, region=local_aws.region, client_id=local_aws.user_pool_client_id,
                          username=username, password=password, session=boto3.Session()).id_token


def _auth_events(auditor: Any, sub: str) -> list[tuple[str, str, str, str]]:
    """(record id, sign-in code, outcome, network address) of the user's latest sign-in records, oldest first."""
    reply = auditor.get("/fhir/AuditEvent", params={"agent": sub, "_sort": "-date", "_count": "20"})
    assert reply.status_code == 200, reply.text
    events = [e["resource"] for e in reply.json().get("entry", [])]
    return [(e["id"], next(c["code"] for c in e["subtype"] if c["system"] == "urn:expediente:auth"), e["outcome"],
             e["agent"][0].get("network", {}).get("address", ""))
            for e in reversed(events) if e["type"]["code"] == "110114"]


def test_a_wrong_password_and_a_sign_in_are_in_the_tenants_audit_trail(api, local_aws):
    tenant = api.tenant(0)
    user = next(u for u in tenant.users if u.role == "pharmacist")
    sub = jwt.decode(_login(local_aws, user.username, user.password), options={"verify_signature": False})["sub"]
    auditor = api.as_user("auditor")
    before = _auth_events(auditor, sub)
    assert [e[1:] for e in before[-2:]] == [("login-attempt", "0", "unknown"), ("login", "0", "unknown")]

    with pytest.raises(ClientError) as refused:
        _login(local_aws, user.username, user.password + "x")
    assert refused.value.response["Error"]["Code"] == "NotAuthorizedException"
    _login(local_aws, user.username, user.password)

    seen = {e[0] for e in before}
    after = [e[1:] for e in _auth_events(auditor, sub) if e[0] not in seen]
    # The attempt is recorded before the password is checked (triggers carry no address); the failure comes
    # from the sign-in event log, which does.
    assert after == [("login-attempt", "0", "unknown"), ("login-failed", "4", "127.0.0.1"),
                     ("login-attempt", "0", "unknown"), ("login", "0", "unknown")]


def test_another_tenants_auditor_sees_none_of_it(api, local_aws):
    user = next(u for u in api.tenant(0).users if u.role == "pharmacist")
    with pytest.raises(ClientError):
        _login(local_aws, user.username, "Wrong-password-1!")
    sub = jwt.decode(_login(local_aws, user.username, user.password), options={"verify_signature": False})["sub"]
    other = api.as_user("auditor", tenant_index=1)
    assert _auth_events(other, sub) == []
