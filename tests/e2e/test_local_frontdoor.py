"""What a function receives from the front door and what the client gets back from it.

A second front door on the session's embedded AWS puts a recording handler behind every route,
so these tests do not depend on the functions being written.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from infra.definitions import FUNCTIONS, TABLES
from local.frontdoor import MAX_BODY_BYTES, FrontDoor, FunctionRunner

pytestmark = pytest.mark.e2e

JAVA_DATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} \d{2} \d{2}:\d{2}:\d{2} UTC \d{4}$")


@dataclass
class Recorder:
    """A stand-in ``lambda_handler``: records each call, answers with ``response``."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    response: Any = None
    raises: Exception | None = None

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.calls.append(
            {
                "event": event,
                "context": context,
                "remaining_ms": context.get_remaining_time_in_millis(),
                "env": dict(os.environ),
            }
        )
        if self.raises is not None:
            raise self.raises
        if self.response is not None:
            return self.response
        return {"statusCode": 200, "headers": {"Content-Type": "application/fhir+json"}, "body": "{}"}

    @property
    def last(self) -> dict[str, Any]:
        return self.calls[-1]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def door(local_aws, recorder) -> Iterator[str]:
    runner = FunctionRunner(local_aws, handlers={fn.id: recorder for fn in FUNCTIONS})
    front_door = FrontDoor(local_aws, runner=runner)
    url = front_door.start(port=0)
    yield url
    front_door.stop()


@pytest.fixture(scope="module")
def physician_token(cognito_user) -> str:
    return cognito_user("physician", clinic_ids=("HGIMB000151", "HGIMB000163"))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_event_has_the_api_gateway_rest_proxy_shape(door, recorder, physician_token):
    response = requests.get(
        f"{door}/fhir/Patient/abc123/_history/2",
        params=[("_elements", "id"), ("name", "uno"), ("name", "dos")],
        headers={**bearer(physician_token), "User-Agent": "e2e-test/1.0", "X-Clinic": "HGIMB000163"},
        timeout=10,
    )
    assert response.status_code == 200
    event = recorder.last["event"]
    assert event["resource"] == "/fhir/Patient/{proxy+}"
    assert event["path"] == "/fhir/Patient/abc123/_history/2"
    assert event["httpMethod"] == "GET"
    assert event["pathParameters"] == {"proxy": "abc123/_history/2"}
    assert event["queryStringParameters"] == {"_elements": "id", "name": "dos"}
    assert event["multiValueQueryStringParameters"] == {"_elements": ["id"], "name": ["uno", "dos"]}
    assert event["headers"]["X-Clinic"] == "HGIMB000163"
    assert event["multiValueHeaders"]["X-Clinic"] == ["HGIMB000163"]
    assert event["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert event["stageVariables"] is None
    assert event["body"] is None
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["stage"] == "local"
    assert context["resourcePath"] == "/fhir/Patient/{proxy+}"
    assert context["httpMethod"] == "GET"
    # No stage in local URLs (like a custom domain): links built from requestContext.path work.
    assert context["path"] == "/fhir/Patient/abc123/_history/2"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["identity"]["userAgent"] == "e2e-test/1.0"
    assert isinstance(context["requestTimeEpoch"], int)
    assert context["requestId"] == response.headers["x-amzn-RequestId"]


def test_claims_are_strings_as_the_cognito_authorizer_renders_them(door, recorder, physician_token, local_aws):
    requests.get(f"{door}/fhir/Patient", headers=bearer(physician_token), timeout=10)
    claims = recorder.last["event"]["requestContext"]["authorizer"]["claims"]
    assert all(isinstance(value, str) for value in claims.values())
    assert claims["cognito:groups"] == "physician"
    assert claims["custom:tenant_id"] == "e2e-tenant"
    assert claims["custom:clinic_ids"] == "HGIMB000151,HGIMB000163"
    assert claims["token_use"] == "id"
    assert claims["aud"] == local_aws.user_pool_client_id
    assert claims["iss"] == local_aws.issuer
    assert JAVA_DATE.match(claims["exp"]), claims["exp"]
    assert JAVA_DATE.match(claims["iat"]), claims["iat"]
    assert claims["auth_time"].isdigit()


def test_the_shared_request_context_accepts_the_event(door, recorder, physician_token):
    from expediente.context import context_from_event

    requests.get(f"{door}/fhir/Patient", headers={**bearer(physician_token), "X-Clinic": "HGIMB000163"}, timeout=10)
    context = context_from_event(recorder.last["event"])
    assert context.tenant == "e2e-tenant"
    assert {role.value for role in context.roles} == {"physician"}
    assert context.clinic_ids == ("HGIMB000151", "HGIMB000163")
    assert context.clinic == "HGIMB000163"
    assert context.source_ip == "127.0.0.1"


def test_bare_token_without_bearer_prefix_is_accepted(door, recorder, physician_token):
    response = requests.get(f"{door}/fhir/Patient", headers={"Authorization": physician_token}, timeout=10)
    assert response.status_code == 200
    assert recorder.calls


def test_most_specific_route_wins_and_a_trailing_slash_is_ignored(door, recorder, physician_token):
    requests.get(f"{door}/fhir/Patient/", headers=bearer(physician_token), timeout=10)
    assert recorder.last["event"]["resource"] == "/fhir/Patient"
    assert recorder.last["event"]["pathParameters"] is None
    requests.post(f"{door}/admin/users/u1/disable", headers=bearer(physician_token), timeout=10)
    assert recorder.last["event"]["resource"] == "/admin/users/{proxy+}"
    assert recorder.last["event"]["pathParameters"] == {"proxy": "u1/disable"}


def test_public_route_reaches_the_function_without_claims(door, recorder):
    response = requests.get(f"{door}/fhir/metadata", timeout=10)
    assert response.status_code == 200
    event = recorder.last["event"]
    assert event["resource"] == "/fhir/metadata"
    assert "authorizer" not in event["requestContext"]


def test_json_body_arrives_as_text(door, recorder, physician_token):
    body = {"resourceType": "Patient", "name": [{"family": "PRUEBA"}]}
    requests.post(
        f"{door}/fhir/Patient",
        data=json.dumps(body),
        headers={**bearer(physician_token), "Content-Type": "application/fhir+json"},
        timeout=10,
    )
    event = recorder.last["event"]
    assert event["isBase64Encoded"] is False
    assert json.loads(event["body"]) == body


def test_binary_body_arrives_base64_encoded(door, recorder, physician_token):
    payload = bytes(range(256)) * 4
    requests.post(
        f"{door}/fhir/Patient",
        data=payload,
        headers={**bearer(physician_token), "Content-Type": "application/dicom"},
        timeout=10,
    )
    event = recorder.last["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload


def test_body_over_one_megabyte_is_refused_with_413(door, recorder, physician_token):
    response = requests.post(
        f"{door}/fhir/Patient",
        data=b"x" * (MAX_BODY_BYTES + 1),
        headers={**bearer(physician_token), "Content-Type": "application/fhir+json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert recorder.calls == []


def test_function_gets_its_environment_only_while_it_runs(door, recorder, physician_token, local_aws):
    before = os.environ.get("AWS_ENDPOINT_URL")
    requests.get(f"{door}/fhir/Patient", headers=bearer(physician_token), timeout=10)
    env = recorder.last["env"]
    for table in TABLES:
        assert env[table.env] == local_aws.tables[table.id]
    assert env["AWS_ENDPOINT_URL"] == local_aws.endpoint
    assert env["KEY_APP_ARN"] == local_aws.key_app_arn
    assert env["USER_POOL_CLIENT_ID"] == local_aws.user_pool_client_id
    assert env["POWERTOOLS_SERVICE_NAME"] == "expediente-patients"
    requests.get(f"{door}/fhir/Organization", headers=bearer(physician_token), timeout=10)
    assert recorder.last["env"]["POWERTOOLS_SERVICE_NAME"] == "expediente-admin"
    assert os.environ.get("AWS_ENDPOINT_URL") == before


def test_lambda_context_looks_like_the_runtime_one(door, recorder, physician_token):
    requests.get(f"{door}/fhir/Patient", headers=bearer(physician_token), timeout=10)
    context = recorder.last["context"]
    assert context.function_name == "expediente-local-patients"
    assert context.invoked_function_arn.endswith(":function:expediente-local-patients")
    assert context.memory_limit_in_mb == "1024"
    assert context.aws_request_id
    assert 0 < recorder.last["remaining_ms"] <= 15_000


def test_proxy_response_is_mapped_back_to_http(door, recorder, physician_token):
    recorder.response = {
        "statusCode": 201,
        "headers": {"Content-Type": "application/fhir+json", "Location": "/fhir/Patient/p1", "ETag": 'W/"1"'},
        "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "ETag": ['W/"2"']},
        "body": base64.b64encode(b'{"id":"p1"}').decode(),
        "isBase64Encoded": True,
    }
    response = requests.post(f"{door}/fhir/Patient", headers=bearer(physician_token), timeout=10)
    assert response.status_code == 201
    assert response.content == b'{"id":"p1"}'
    assert response.headers["Location"] == "/fhir/Patient/p1"
    assert response.headers["ETag"] == 'W/"2"'  # multiValueHeaders win over headers
    assert response.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]
    assert response.headers["x-amzn-RequestId"] == recorder.last["event"]["requestContext"]["requestId"]


def test_response_without_content_type_defaults_to_json(door, recorder, physician_token):
    recorder.response = {"statusCode": 200, "body": "[]"}
    response = requests.get(f"{door}/fhir/Patient", headers=bearer(physician_token), timeout=10)
    assert response.headers["Content-Type"] == "application/json"


def test_function_exception_becomes_api_gateway_502(door, recorder, physician_token):
    recorder.raises = RuntimeError("patient JUAN PEREZ broke it")
    response = requests.get(f"{door}/fhir/Patient", headers=bearer(physician_token), timeout=10)
    assert response.status_code == 502
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "exception"
    assert response.headers["x-amzn-RequestId"] in outcome["issue"][0]["diagnostics"]
    assert "JUAN" not in response.text
    assert response.headers["x-amzn-RequestId"]


def test_exception_message_is_not_logged(door, recorder, physician_token, caplog):
    recorder.raises = RuntimeError("patient JUAN PEREZ broke it")
    with caplog.at_level("DEBUG"):
        requests.get(f"{door}/fhir/Patient", headers=bearer(physician_token), timeout=10)
    assert "RuntimeError" in caplog.text
    assert "JUAN PEREZ" not in caplog.text
    assert physician_token not in caplog.text


@pytest.mark.parametrize(
    "result", [{"statusCode": None}, "ok", {"body": "{}"}, {"statusCode": 200, "body": {"not": "a string"}}]
)
def test_malformed_proxy_response_becomes_502(door, recorder, physician_token, result):
    recorder.response = result
    response = requests.get(f"{door}/fhir/Patient", headers=bearer(physician_token), timeout=10)
    assert response.status_code == 502
