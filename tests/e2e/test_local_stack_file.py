"""``stack.json`` tells a client everything it needs; the provisioned AWS matches the definitions."""

from __future__ import annotations

import json

import jwt
import pytest
import requests

from infra.definitions import BUCKETS, FUNCTIONS, QUEUES, ROLES, RULES, TABLES, USER_ATTRIBUTES
from local.aws import describe_local_resources
from local.token import main as token_main

pytestmark = pytest.mark.e2e


def test_stack_file_points_at_the_running_stack(local_stack, local_aws):
    document = json.loads(local_stack.stack_file.read_text(encoding="utf-8"))
    assert document["api_url"] == local_stack.api_url
    assert document["aws_endpoint"] == local_aws.endpoint
    assert document["region"] == local_aws.region
    assert document["user_pool_id"] == local_aws.user_pool_id
    assert document["user_pool_client_id"] == local_aws.user_pool_client_id
    assert document["tables"] == dict(local_aws.tables)
    assert document["key_app_arn"] == local_aws.key_app_arn
    assert document["event_bus_name"] == local_aws.event_bus_name
    assert isinstance(document["tenants"], list)
    assert requests.get(f"{document['api_url']}/nowhere", timeout=10).status_code == 404
    pool = local_aws.client("cognito-idp").describe_user_pool(UserPoolId=document["user_pool_id"])
    assert pool["UserPool"]["Id"] == local_aws.user_pool_id


def test_token_helper_prints_an_id_token(local_stack, cognito_user, capsys):
    cognito_user("nurse")  # makes sure the pool is usable; the helper logs a demo user in
    tenants = json.loads(local_stack.stack_file.read_text(encoding="utf-8"))["tenants"]
    if tenants:
        username = tenants[0]["users"][0]["username"]
        arguments = [username, "--stack-file", str(local_stack.stack_file)]
    else:
        # Without demo users, log in a user made here with an explicit password.
        assert local_stack.aws is not None
        cognito = local_stack.aws.client("cognito-idp")
        username = "e2e-token-helper"
        cognito.admin_create_user(UserPoolId=local_stack.aws.user_pool_id, Username=username, MessageAction="SUPPRESS")
        cognito.admin_set_user_password(
            UserPoolId=local_stack.aws.user_pool_id, Username=username, Password="E2e-Password-2026!", Permanent=True
        )
        arguments = [username, "--stack-file", str(local_stack.stack_file), "--password", "E2e-Password-2026!"]
    assert token_main(arguments) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["cognito:username"] == username
    assert claims["token_use"] == "id"


def test_token_helper_refuses_an_unknown_user(local_stack, capsys):
    assert token_main(["nobody-here", "--stack-file", str(local_stack.stack_file)]) == 2
    assert capsys.readouterr().out == ""


def test_provisioned_resources_match_the_definitions(local_aws):
    described = describe_local_resources(local_aws)
    assert described["tables"] == {
        t.id: {
            "pk": t.pk,
            "sk": t.sk,
            "indexes": {i.name: {"pk": i.pk, "sk": i.sk} for i in t.indexes},
            "ttl_attribute": t.ttl_attribute,
        }
        for t in TABLES
    }
    assert set(described["buckets"]) == {b.id for b in BUCKETS}
    assert all(bucket["versioned"] for bucket in described["buckets"].values())
    assert described["buckets"]["ingest"]["notifications"] == {"ingest": ["s3:ObjectCreated:*"]}
    assert {q.id for q in QUEUES} <= set(described["queues"])
    assert all(queue["dlq"] for queue in described["queues"].values())
    assert described["rules"] == {
        r.id: {"sources": [r.source], "detail_types": sorted(r.detail_types), "target_queues": [r.target_queue]}
        for r in RULES
    }
    assert described["routes"] == {
        fn.id: {"authorized": sorted(fn.routes), "public": sorted(fn.public_routes)} for fn in FUNCTIONS
        if fn.routes or fn.public_routes  # a scheduled job (audit_digest) has no route
    }
    assert described["user_pool"]["groups"] == sorted(ROLES)
    assert described["user_pool"]["custom_attributes"] == sorted(f"custom:{a}" for a in USER_ATTRIBUTES)
    assert described["user_pool"]["client_has_secret"] is False
    assert "ALLOW_USER_PASSWORD_AUTH" in described["user_pool"]["client_auth_flows"]
