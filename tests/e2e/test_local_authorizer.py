"""The front door refuses requests the deployed Cognito authorizer would refuse, as it does."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from infra.definitions import gateway_response

pytestmark = pytest.mark.e2e



def assert_unauthorized(response) -> None:
    """The deployed API's UNAUTHORIZED gateway response (infra/stacks/stateless.py), byte for byte."""
    assert response.status_code == 401
    assert response.content == gateway_response("UNAUTHORIZED").body().encode()
    assert response.json()["issue"][0]["code"] == "login"
    assert response.headers["Content-Type"] == "application/fhir+json"
    assert response.headers["x-amzn-ErrorType"] == "UnauthorizedException"
    assert response.headers["x-amzn-RequestId"]


def test_request_without_token_is_refused_with_api_gateway_401(api):
    assert_unauthorized(api.anonymous().get("/fhir/Patient"))


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer not-a-jwt", "Bearer a.b.c", "Basic dXNlcjpwYXNzd29yZA==", "Bearer x y"],
)
def test_garbage_authorization_header_is_refused(api, authorization):
    response = api.anonymous().get("/fhir/Patient", headers={"Authorization": authorization})
    assert_unauthorized(response)


def test_expired_token_is_refused(api, forge_token):
    now = int(time.time())
    token = forge_token(iat=now - 7200, auth_time=now - 7200, exp=now - 60)
    assert_unauthorized(api.anonymous().get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}))


def test_token_for_another_app_client_is_refused(api, forge_token):
    token = forge_token(aud="someotherappclient0000000")
    assert_unauthorized(api.anonymous().get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}))


def test_token_of_another_user_pool_is_refused(api, forge_token, local_aws):
    token = forge_token(iss=f"https://cognito-idp.{local_aws.region}.amazonaws.com/us-east-1_SomeOtherPool")
    assert_unauthorized(api.anonymous().get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}))


def test_access_token_is_refused_because_the_authorizer_wants_an_id_token(api, forge_token, local_aws):
    token = forge_token(token_use="access", aud=None, client_id=local_aws.user_pool_client_id)
    assert_unauthorized(api.anonymous().get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}))


def test_id_token_claiming_another_use_is_refused(api, forge_token):
    token = forge_token(token_use="access")
    assert_unauthorized(api.anonymous().get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}))


def test_token_signed_by_another_key_is_refused(api, forge_token):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = forge_token(key=stranger)
    assert_unauthorized(api.anonymous().get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}))


def test_token_with_unknown_key_id_is_refused(api, forge_token):
    token = forge_token(headers={"kid": "not-a-cognito-key"})
    assert_unauthorized(api.anonymous().get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}))


def test_hmac_token_is_refused(api, local_aws):
    now = int(time.time())
    claims = {
        "iss": local_aws.issuer, "aud": local_aws.user_pool_client_id, "token_use": "id",
        "sub": "x", "iat": now, "exp": now + 600,
    }
    token = jwt.encode(claims, "a-shared-secret-of-thirty-two-bytes!", algorithm="HS256", headers={"kid": "dummy"})
    assert_unauthorized(api.anonymous().get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}))


def test_token_without_expiry_is_refused(api, forge_token):
    token = forge_token(exp=None)
    assert_unauthorized(api.anonymous().get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}))


def test_unknown_route_answers_404_operation_outcome_before_any_token_check(api):
    response = api.anonymous().get("/fhir/NoSuchResource/1")
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/fhir+json"
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    assert outcome["issue"][0]["code"] == "not-found"
    assert "/fhir/NoSuchResource/1" in outcome["issue"][0]["diagnostics"]


def test_public_route_accepts_only_get(api):
    response = api.anonymous().post("/fhir/metadata", json={})
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


def test_capability_statement_needs_no_token(api, local_stack):
    response = api.anonymous().get("/fhir/metadata")
    assert response.status_code == 200
    assert response.json()["resourceType"] == "CapabilityStatement"
    assert response.headers["x-amzn-RequestId"]
