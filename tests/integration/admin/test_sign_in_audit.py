"""Sign-ins in the audit trail (decision 0029): the user pool's triggers (functions/sign_in) record
attempts and successes; Cognito's sign-in event log, delivered by a CloudWatch Logs subscription to the
admin function, records failures."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import boto3
import pytest

from expediente import aws
from expediente.errors import AuditUnavailable
from functions.admin import sign_in_failures
from tests.integration.admin.conftest import AdminWorld, Caller, Tenant
from tests.support import aws as support


def _records(tenant: str) -> list[dict[str, Any]]:
    items = boto3.client("dynamodb", region_name=support.REGION).query(
        TableName=support.table_name("audit"), KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"{tenant}#AUDIT"}})["Items"]
    return sorted((aws.from_item(i) for i in items), key=lambda r: r["sk"])


@pytest.fixture
def trail(admin_world: AdminWorld, chain_a: Tenant) -> tuple[Tenant, Caller, Caller]:
    """A tenant, its auditor and another user (a second auditor) whose sign-ins are audited."""
    return chain_a, admin_world.user(chain_a, "auditor"), admin_world.user(chain_a, "auditor")


def _trigger(source: str, tenant: str, username: str, sub: str) -> dict[str, Any]:
    return {"version": "1", "triggerSource": source, "region": support.REGION, "userPoolId": "us-east-1_pool",
            "userName": username, "callerContext": {"awsSdkVersion": "aws-sdk-js-3", "clientId": "client-1"},
            "request": {"userAttributes": {"sub": sub, "custom:tenant_id": tenant, "cognito:user_status": "CONFIRMED"},
                        **({"newDeviceUsed": False} if source.startswith("Post") else {"validationData": {}})},
            "response": {}}


def auth_event(username: str, *, response: str = "Fail", event_type: str = "SignIn", challenge: str = "Password",
               event_id: str = "3f1c9a4e-0000-4000-8000-000000000001", ip: str = "198.51.100.7") -> dict[str, Any]:
    """One ``userAuthEvents`` log record as Cognito exports it (the fields of its AuthEventType)."""
    return {
        "eventTimestamp": "1764140000000", "eventSource": "USER_AUTH_EVENTS", "logLevel": "INFO",
        "logSourceVersion": "1.0", "userPoolId": "us-east-1_pool",
        "message": {
            "eventId": event_id, "eventType": event_type, "eventResponse": response,
            "creationDate": "2026-11-26T07:00:00.000Z", "userName": username, "userSub": "sub-of-" + username,
            "eventRisk": {"riskDecision": "NoRisk", "riskLevel": "Low", "compromisedCredentialsDetected": False},
            "challenges": [{"challengeName": challenge,
                            "challengeResponse": "Failure" if response == "Fail" else "Success"}],
            "eventContextData": {"ipAddress": ip, "deviceName": "Chrome 131, Android", "timezone": "-06:00"},
        },
    }


def subscription(*messages: Any, control: bool = False) -> dict[str, Any]:
    """What a CloudWatch Logs subscription filter invokes Lambda with."""
    document = {
        "messageType": "CONTROL_MESSAGE" if control else "DATA_MESSAGE", "owner": "123456789012",
        "logGroup": "/aws/vendedlogs/cognito/expediente-sign-in-events", "logStream": "stream",
        "subscriptionFilters": ["FailedSignIns"],
        "logEvents": [{"id": str(i), "timestamp": 1764140000000 + i,
                       "message": m if isinstance(m, str) else json.dumps(m)} for i, m in enumerate(messages)],
    }
    return {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(document).encode())).decode()}}


def _admin(event: dict[str, Any]) -> Any:
    from functions.admin.handler import lambda_handler
    from tests.conftest import LambdaContext

    return lambda_handler(event, LambdaContext())


# The triggers ----------------------------------------------------------------------------------------


def test_sign_in_attempts_and_successes_are_audited_from_cognito_triggers(trail):
    from functions.sign_in.handler import lambda_handler
    from tests.conftest import LambdaContext

    tenant, auditor, _ = trail
    attempt = _trigger("PreAuthentication_Authentication", tenant.id, "nurse7", "sub-7")
    assert lambda_handler(attempt, LambdaContext()) == attempt  # Cognito's contract: the event back
    lambda_handler(_trigger("PostAuthentication_Authentication", tenant.id, "nurse7", "sub-7"), LambdaContext())
    lambda_handler(_trigger("PreAuthentication_Authentication", tenant.id, "nurse7", "sub-7"), LambdaContext())
    mine = [r for r in _records(tenant.id) if r["user_id"] == "sub-7"]
    assert [r["action"] for r in mine] == ["login-attempt", "login", "login-attempt"]
    assert all(r["chain"] and r["resource_id"] == "nurse7" for r in mine)
    bundle = auditor.get("/fhir/AuditEvent", agent="sub-7").body
    subtypes = {c["code"] for e in bundle["entry"] for c in e["resource"]["subtype"]}
    assert {"110122", "login", "login-attempt"} <= subtypes
    assert all(e["resource"]["type"]["code"] == "110114" for e in bundle["entry"])


def test_a_sign_in_without_a_tenant_is_let_through_unaudited(trail):
    from functions.sign_in import handler

    tenant, _, _ = trail
    before = len(_records(tenant.id))
    event = _trigger("PostAuthentication_Authentication", "", "operator", "sub-op")
    assert handler.handle(event) == event
    assert len(_records(tenant.id)) == before


def test_a_sign_in_that_cannot_be_audited_is_refused(trail, monkeypatch):
    from functions.sign_in import handler

    tenant, _, _ = trail
    monkeypatch.setenv("TABLE_AUDIT", "no-such-table")
    support.reset_caches()
    with pytest.raises(AuditUnavailable):
        handler.handle(_trigger("PreAuthentication_Authentication", tenant.id, "nurse7", "sub-7"))


def test_the_trigger_function_refuses_an_event_that_is_not_a_sign_in_trigger(trail):
    from functions.sign_in import handler

    with pytest.raises(ValueError, match="not a sign-in trigger"):
        handler.handle({"triggerSource": "PreSignUp_SignUp", "userName": "x", "request": {}})


# Failed sign-ins from Cognito's sign-in event log ------------------------------------------------------


def test_a_failed_sign_in_is_audited_under_the_users_tenant_with_what_failed(trail):
    tenant, auditor, nurse = trail
    before = {r["id"] for r in _records(tenant.id)}
    counts = _admin(subscription(auth_event(nurse.username), auth_event(nurse.username, challenge="Mfa",
                                                                         event_id="evt-2", ip="203.0.113.9")))
    assert counts == {"failed": 2, "other": 0, "unattributed": 0, "unreadable": 0}
    new = [r for r in _records(tenant.id) if r["id"] not in before]
    assert [r["action"] for r in new] == ["login-failed", "login-failed"]
    first, second = new
    assert first["resource_type"] == "User" and first["resource_id"] == nurse.username
    assert first["status"] == 401 and first["outcome"] == "4" and first["chain"]
    assert first["user_id"] == nurse.claims["sub"] and first["source_ip"] == "198.51.100.7"
    assert first["detail"]["failed"] == "Password" and first["detail"]["event"].startswith("3f1c9a4e")
    assert first["detail"]["risk_level"] == "Low" and first["detail"]["compromised_credentials"] == "false"
    assert second["detail"]["failed"] == "Mfa" and second["source_ip"] == "203.0.113.9"
    bundle = auditor.get("/fhir/AuditEvent", agent=nurse.claims["sub"]).body
    failed = [e["resource"] for e in bundle["entry"]
              if {"code": "login-failed", "system": "urn:expediente:auth"} in e["resource"]["subtype"]]
    assert len(failed) == 2
    assert all(e["outcome"] == "4" and e["type"]["code"] == "110114" for e in failed)
    assert {e["agent"][0]["network"]["address"] for e in failed} == {"198.51.100.7", "203.0.113.9"}


def test_successes_and_other_events_are_not_recorded_twice(trail):
    tenant, _, nurse = trail
    before = len(_records(tenant.id))
    counts = _admin(subscription(auth_event(nurse.username, response="Pass"),
                                 auth_event(nurse.username, response="InProgress"),
                                 auth_event(nurse.username, event_type="ForgotPassword")))
    assert counts == {"failed": 0, "other": 3, "unattributed": 0, "unreadable": 0}
    assert len(_records(tenant.id)) == before


def test_failures_of_unknown_users_and_unreadable_events_are_counted_not_recorded(trail, capsys):
    tenant, _, nurse = trail
    before = len(_records(tenant.id))
    counts = _admin(subscription(auth_event("nobody.here"), "not json", {"eventSource": "USER_AUTH_EVENTS"},
                                 auth_event(nurse.username)))
    assert counts == {"failed": 1, "other": 0, "unattributed": 1, "unreadable": 2}
    assert len(_records(tenant.id)) == before + 1
    out = capsys.readouterr().out
    assert "nobody.here" not in out and "SignInEventsUnreadable" in out and "SignInFailuresUnattributed" in out


def test_a_control_message_has_nothing_to_record_and_a_bad_payload_is_an_error(trail):
    assert _admin(subscription(control=True)) == {"failed": 0, "other": 0, "unattributed": 0, "unreadable": 0}
    with pytest.raises(ValueError, match="subscription payload"):
        _admin({"awslogs": {"data": "bm90IGd6aXA="}})


def test_when_a_failure_cannot_be_audited_the_rest_is_recorded_and_the_delivery_fails(trail, monkeypatch):
    tenant, _, nurse = trail
    other = trail[1]
    real = sign_in_failures._record
    calls = []

    def flaky(sign_in, account):
        calls.append(account.username)
        if account.username == nurse.username:
            raise AuditUnavailable("table down")
        real(sign_in, account)

    monkeypatch.setattr(sign_in_failures, "_record", flaky)
    before = len(_records(tenant.id))
    with pytest.raises(AuditUnavailable, match="1 failed sign-ins"):
        _admin(subscription(auth_event(nurse.username), auth_event(other.username, event_id="evt-9")))
    assert calls == [nurse.username, other.username]
    assert [r["resource_id"] for r in _records(tenant.id)[before:]] == [other.username]


@pytest.mark.parametrize("message", [
    # The event at the top level, the API's PascalCase names, and the event as a JSON string in the envelope.
    {"eventType": "SignIn", "eventResponse": "Fail", "userName": "u1"},
    {"EventType": "SignIn", "EventResponse": "Fail", "UserName": "u1",
     "ChallengeResponses": [{"ChallengeName": "Password", "ChallengeResponse": "Failure"}]},
    {"eventSource": "USER_AUTH_EVENTS", "message": json.dumps({"eventType": "SignIn", "eventResponse": "Fail",
                                                                "userName": "u1"})},
])
def test_the_parser_reads_the_shapes_cognito_uses(message):
    parsed = sign_in_failures.parse(json.dumps(message))
    assert parsed is not None and sign_in_failures.is_failed_sign_in(parsed) and parsed.username == "u1"


@pytest.mark.parametrize("message", ["", "[]", "{}", '{"eventType": "SignIn"}', '{"message": 5}',
                                     '{"eventType": "SignIn", "eventResponse": "Fail"}'])
def test_the_parser_refuses_what_is_not_a_sign_in_event(message):
    assert sign_in_failures.parse(message) is None
