"""CapabilityStatement, idempotency, audit failures and the operator command, end to end."""

from __future__ import annotations

import json

import boto3
import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from expediente import tenants
from expediente.context import TENANT_ID
from expediente.errors import Duplicate, Invalid
from infra import definitions
from ops import __main__ as cli
from ops.tenants import StackInfo, StackInfoError, create_tenant
from tests.integration.admin.conftest import PASSWORD, REGION, organization
from tests.support import aws as support

JSON = {"Content-Type": "application/json"}


def test_metadata_needs_no_token(anonymous):
    reply = anonymous.get("/fhir/metadata")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/fhir+json"
    statement = CapabilityStatement.model_validate(reply.body)
    assert statement.fhirVersion == "4.0.1"
    resources = {r["type"]: r for r in reply.body["rest"][0]["resource"]}
    assert {"Patient", "Organization", "Practitioner", "AuditEvent"} <= set(resources)
    assert reply.body["url"] == "https://api.example.test/prod/fhir/metadata"


def test_the_openapi_description_and_its_page_need_no_token(anonymous):
    described = anonymous.get("/openapi.json")
    assert described.status == 200 and described.headers["Content-Type"] == "application/json"
    assert described.body["openapi"] == "3.0.3"
    assert "post" in described.body["paths"]["/fhir/MedicationRequest/{resource_id}/$sign"]
    page = anonymous.get("/docs")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "/fhir/MedicationRequest/{resource_id}/$sign" in page.body and "<script" not in page.body


def test_everything_else_needs_a_token(anonymous):
    for method, path in (("GET", "/fhir/Organization"), ("GET", "/fhir/AuditEvent"), ("GET", "/admin/users"),
                         ("POST", "/fhir/Practitioner")):
        reply = anonymous.call(method, path, {} if method == "POST" else None)
        assert reply.status == 401, (method, path)
        assert reply.body["issue"][0]["code"] == "login"


def test_an_idempotent_post_is_replayed_and_creates_one_clinic(chain_a):
    body = organization("HGIMB000151", "Clínica Centro")
    key = {"Idempotency-Key": "alta-clinica-151"}
    first = chain_a.admin.post("/fhir/Organization", body, headers=key)
    again = chain_a.admin.post("/fhir/Organization", body, headers=key)
    assert first.status == again.status == 201
    assert again.body == first.body
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    found = chain_a.admin.get("/fhir/Organization", identifier="HGIMB000151")
    assert found.body["total"] == 1
    other = chain_a.admin.post("/fhir/Organization", organization("HGIMB000163", "Otra"), headers=key)
    assert other.status == 422


def test_an_idempotent_user_creation_creates_one_account(admin_world, chain_a):
    body = {"username": "auditora", "email": "auditora@example.com", "role": "auditor"}
    headers = {**JSON, "Idempotency-Key": "alta-auditora"}
    first = chain_a.admin.post("/admin/users", body, headers=headers)
    again = chain_a.admin.post("/admin/users", body, headers=headers)
    assert first.status == again.status == 201
    assert again.body == first.body
    assert again.headers["Content-Type"] == "application/json"
    assert [u["username"] for u in chain_a.admin.get("/admin/users").body["users"]].count("auditora") == 1


@pytest.fixture
def audit_table_missing(monkeypatch):
    def break_it() -> None:
        monkeypatch.setenv("TABLE_AUDIT", "no-such-audit-table")
        support.reset_caches()

    return break_it


def test_a_read_that_cannot_be_audited_answers_503_without_data(admin_world, chain_a, audit_table_missing):
    clinic = admin_world.clinic(chain_a, "HGIMB000151")
    audit_table_missing()
    reply = chain_a.admin.get(f"/fhir/Organization/{clinic['id']}")
    assert reply.status == 503
    assert reply.body["resourceType"] == "OperationOutcome"
    assert "Clínica" not in json.dumps(reply.body)
    assert clinic["id"] not in json.dumps(reply.body)
    assert chain_a.admin.get("/fhir/Organization").status == 503


def test_a_write_that_cannot_be_audited_changes_nothing(admin_world, chain_a, audit_table_missing, monkeypatch):
    audit_table_missing()
    reply = chain_a.admin.post("/fhir/Organization", organization("HGIMB000151", "Clínica"))
    assert reply.status == 503
    assert reply.body["resourceType"] == "OperationOutcome"
    user = chain_a.admin.post("/admin/users", {"username": "sin.auditoria", "email": "s@example.com",
                                               "role": "auditor"}, headers=JSON)
    assert user.status == 503
    monkeypatch.setenv("TABLE_AUDIT", support.table_name("audit"))
    support.reset_caches()
    assert chain_a.admin.get("/fhir/Organization", identifier="HGIMB000151").body["total"] == 0
    cognito = boto3.client("cognito-idp", region_name=REGION)
    with pytest.raises(cognito.exceptions.UserNotFoundException):  # the account was removed again
        cognito.admin_get_user(UserPoolId=admin_world.stack.user_pool_id, Username="sin.auditoria")


# -- the operator command ------------------------------------------------------------------------


def test_create_tenant_writes_tenant_chain_and_admin(admin_world):
    created = create_tenant(stack=admin_world.stack, name="  Clínicas Demo ", admin_username="Ana.Admin",
                            admin_email="ana@example.com", admin_password=PASSWORD)
    assert TENANT_ID.match(created.tenant_id)
    assert created.tenant_id.startswith("t-")
    assert len(created.tenant_id) == 12
    assert created.admin_username == "ana.admin"
    record = tenants.get_tenant(created.tenant_id)
    assert record["name"] == "Clínicas Demo"
    assert record["organization_id"] == created.organization_id
    assert tenants.wrapped_index_key(created.tenant_id)  # the blind-index key is in place
    admin = admin_world.login("ana.admin")
    assert admin.claims["custom:tenant_id"] == created.tenant_id
    assert admin.claims["cognito:groups"] == "admin"
    users = admin.get("/admin/users").body["users"]
    assert [(u["username"], u["role"], u["user_id"]) for u in users] == [("ana.admin", "admin", admin.user_id)]


def test_without_a_password_cognito_sends_a_temporary_one(admin_world):
    created = create_tenant(stack=admin_world.stack, name="Cadena", admin_username="beto.admin",
                            admin_email="beto@example.com")
    cognito = boto3.client("cognito-idp", region_name=REGION)
    user = cognito.admin_get_user(UserPoolId=admin_world.stack.user_pool_id, Username=created.admin_username)
    assert user["UserStatus"] == "FORCE_CHANGE_PASSWORD"


def test_a_taken_admin_username_leaves_nothing_behind(admin_world, chain_a):
    dynamodb = boto3.client("dynamodb", region_name=REGION)

    def tenant_records() -> int:
        items = dynamodb.scan(TableName=support.table_name("admin"))["Items"]  # test inspection only
        return sum(1 for i in items if i["pk"]["S"].startswith("TENANT#"))

    before = tenant_records()
    with pytest.raises(Duplicate):
        create_tenant(stack=admin_world.stack, name="Otra", admin_username=chain_a.admin.username,
                      admin_email="x@example.com", admin_password=PASSWORD)
    with pytest.raises(Invalid):
        create_tenant(stack=admin_world.stack, name=" ", admin_username="nadie.admin",
                      admin_email="n@example.com", admin_password=PASSWORD)
    assert tenant_records() == before


def test_operator_audit_trail_names_the_operator(admin_world, chain_a):
    auditor = admin_world.user(chain_a, "auditor")
    oldest = [e["resource"] for e in auditor.get("/fhir/AuditEvent", _sort="date", _count="2").body["entry"]]
    # The tenant's first two records: the chain Organization and the first admin, written together.
    assert all(e["agent"][0]["who"]["identifier"]["value"].startswith("arn:aws:") for e in oldest)
    assert {"reference": f"Organization/{chain_a.chain_id}"} in [w["what"] for e in oldest for w in e["entity"]]


def test_cli_reads_stack_json_and_prints_ids_but_no_password(admin_world, tmp_path, capsys):
    stack = admin_world.stack
    path = tmp_path / "stack.json"
    path.write_text(json.dumps({
        "region": stack.region, "user_pool_id": stack.user_pool_id, "user_pool_client_id": stack.user_pool_client_id,
        "key_app_arn": stack.key_app_arn, "tables": {t.id: support.table_name(t.id) for t in definitions.TABLES},
    }))
    code = cli.main(["create-tenant", "--name", "Clínicas CLI", "--admin-username", "cli.admin",
                     "--admin-email", "cli@example.com", "--admin-password", PASSWORD, "--stack-json", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    tenant_id = out.split("tenant_id=")[1].split()[0]
    assert tenants.get_tenant(tenant_id)["name"] == "Clínicas CLI"
    assert "admin_username=cli.admin" in out
    assert PASSWORD not in out


def test_stack_json_without_tables_says_what_is_missing(tmp_path):
    path = tmp_path / "stack.json"
    path.write_text(json.dumps({"region": "us-east-1", "user_pool_id": "p", "aws_endpoint": "http://127.0.0.1:4566"}))
    with pytest.raises(StackInfoError, match="key_app_arn, table_admin, table_audit"):
        StackInfo.from_stack_json(path)
    assert cli.main(["create-tenant", "--name", "X", "--admin-username", "xx.admin", "--admin-email",
                     "x@example.com", "--stack-json", str(path)]) == 2


def test_stack_info_from_cloudformation_outputs(admin_world):
    outputs = {"UserPoolId": "us-east-1_pool", "UserPoolClientId": "client", "AppKeyArn": "arn:aws:kms:key",
               "EventBusName": "expediente", "TableAdminName": "expediente-admin",
               "TableAuditName": "expediente-audit", "TablePatientsName": "expediente-patients",
               "TableIdempotencyName": "expediente-idempotency"}
    template = {"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
                "Outputs": {key: {"Value": value} for key, value in outputs.items()}}
    boto3.client("cloudformation", region_name=REGION).create_stack(StackName="Expediente-Stateful",
                                                                     TemplateBody=json.dumps(template))
    stack = StackInfo.from_cloudformation("Expediente-Stateful", REGION)
    assert (stack.table_admin, stack.table_audit, stack.table_patients) == (
        "expediente-admin", "expediente-audit", "expediente-patients")
    assert stack.key_app_arn == "arn:aws:kms:key"
    assert stack.user_pool_id == "us-east-1_pool"
    assert stack.endpoint_url is None
