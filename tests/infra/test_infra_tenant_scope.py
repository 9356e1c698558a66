"""Tenant-scoped credentials in the template (decision 0023): every function's data role is bound to a tenant.

For every function of ``infra.definitions.FUNCTIONS`` (the stateless template) and of ``IDENTITY_FUNCTIONS``
(the user pool's trigger, in the stateful template) the synthesized template must have:

- a tenant data role that only the function's execution role may assume, and only with the session
  tag ``tenant``; its environment names it (``TENANT_ROLE_ARN``);
- in that role, every DynamoDB statement conditioned on ``dynamodb:LeadingKeys`` matching the
  principal's tenant tag (``<tenant>#*``, ``TENANT#<tenant>``), with a ``Null`` test so a request
  without leading keys is not let through; every S3 statement on ``<bucket>/<tenant>/*`` objects
  only; the app key only with ``kms:EncryptionContext:tenant`` equal to the tag;
- in the execution role, no data access to a table or bucket beyond the global items listed in
  ``infra.tenancy.GLOBAL_ACCESS`` (each behind its own leading-key or object-key pattern), no use of
  the app key, and the Scan deny.

The checks are functions over policy statements so that the tests at the bottom can show each one
refusing a statement that breaks it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra import definitions, tenancy
from infra.naming import table_name
from tests.infra.synth_support import Synth, of_type

pytestmark = pytest.mark.infra

FUNCTION_IDS = [f.id for f in definitions.ALL_FUNCTIONS]
IDENTITY_IDS = {f.id for f in definitions.IDENTITY_FUNCTIONS}
TAG = tenancy.PRINCIPAL_TENANT
TENANT_KEYS = sorted(p.replace("{tenant}", TAG) for p in tenancy.TENANT_LEADING_KEYS)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _flat(value: Any) -> str:
    """A resource as text: ``Fn::Join`` joined, references as ``<id>``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_flat(p) for p in parts)
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return f"<{value['Fn::GetAtt'][0]}.{value['Fn::GetAtt'][1]}>"
    return json.dumps(value, sort_keys=True)


def _statements(resources: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    return [s for p in of_type(resources, "AWS::IAM::Policy").values() if {"Ref": role_id} in p["Properties"]["Roles"]
            for s in p["Properties"]["PolicyDocument"]["Statement"]]


def _allows(statement: dict[str, Any], prefix: str) -> bool:
    return statement["Effect"] == "Allow" and any(a.startswith(prefix) for a in _as_list(statement["Action"]))


def _table_of(resource: str) -> str | None:
    for table in definitions.TABLES:
        name = table_name("", table.id)
        if resource.endswith(f":table/{name}") or f":table/{name}/index/" in resource:
            return table.id
    return None


def _bucket_of(resource: str) -> tuple[str, str] | None:
    """(bucket id, object key pattern) of an object ARN, or (bucket id, "") for the bucket itself."""
    for bucket in definitions.BUCKETS:
        marker = f":s3:::expediente-{bucket.id.replace('_', '-')}-"
        if marker in resource:
            _, _, key = resource.partition(marker)[2].partition("/")
            return bucket.id, key
    return None


# ------------------------------------------------------------------ the checks ---


def tenant_statement_problems(statement: dict[str, Any]) -> list[str]:
    """Why a tenant-role statement could reach another tenant's data ([] when it cannot)."""
    if statement["Effect"] != "Allow":
        return []
    problems = []
    actions = _as_list(statement["Action"])
    resources = [_flat(r) for r in _as_list(statement["Resource"])]
    conditions = statement.get("Condition", {})
    if any(a.startswith("dynamodb:") for a in actions):
        keys = sorted(_as_list(conditions.get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys", [])))
        tenant_grants = [g for g in tenancy.GLOBAL_ACCESS if g.credentials == "tenant" and g.kind == "table"]
        if keys != TENANT_KEYS and not any(keys == sorted(g.keys) and set(actions) <= set(g.actions)
                                           for g in tenant_grants):
            problems.append(f"DynamoDB {actions} not limited to the tenant's leading keys: {keys}")
        if conditions.get("Null", {}).get("dynamodb:LeadingKeys") != "false":
            problems.append("DynamoDB statement lets requests without leading keys through")
        if "dynamodb:Scan" in actions or any("*" in a for a in actions):
            problems.append(f"DynamoDB statement allows {actions}")
    if any(a.startswith("s3:") for a in actions):
        for resource in resources:
            found = _bucket_of(resource)
            pattern = found[1] if found else ""
            if found and not pattern:  # the bucket itself: listing, only under the tenant's prefix
                prefixes = _as_list(conditions.get("StringLike", {}).get("s3:prefix", []))
                if actions != list(tenancy.BUCKET_LIST_ACTIONS) or prefixes != [f"{TAG}/*"]:
                    problems.append(f"S3 {actions} on bucket {resource}: not a listing of the tenant's prefix")
                continue
            tenant_globals = [k for g in tenancy.GLOBAL_ACCESS if g.credentials == "tenant" and g.kind == "bucket"
                              for k in g.keys]
            if not (pattern.startswith(f"{TAG}/") or pattern in tenant_globals):
                problems.append(f"S3 {actions} on {resource}: not the tenant's prefix")
    if any(a.startswith("kms:") for a in actions):
        context = conditions.get("StringEquals", {})
        if context.get(tenancy.APP_KEY_CONTEXT) != TAG and "kms:ViaService" not in context:
            problems.append(f"KMS {actions} neither bound to the tenant's encryption context nor to DynamoDB/S3")
    return problems


def execution_statement_problems(function_id: str, statement: dict[str, Any], app_key: str) -> list[str]:
    """Why an execution-role statement reaches tenant data ([] when it only reaches global items)."""
    if statement["Effect"] != "Allow":
        return []
    problems = []
    actions = _as_list(statement["Action"])
    resources = [_flat(r) for r in _as_list(statement["Resource"])]
    conditions = statement.get("Condition", {})
    grants = tenancy.global_access(function_id)
    if any(a.startswith("dynamodb:") for a in actions):
        keys = sorted(_as_list(conditions.get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys", [])))
        tables = {_table_of(r) for r in resources}
        if not any(g.kind == "table" and {g.resource} == tables and keys == sorted(g.keys)
                   and set(actions) <= set(g.actions) for g in grants):
            problems.append(f"DynamoDB {actions} on {sorted(map(str, tables))} with leading keys {keys}: not global")
        if conditions.get("Null", {}).get("dynamodb:LeadingKeys") != "false":
            problems.append("DynamoDB statement lets requests without leading keys through")
    if any(a.startswith("s3:") for a in actions):
        for resource in resources:
            found = _bucket_of(resource)
            if found is None or not any(g.kind == "bucket" and g.resource == found[0] and found[1] in g.keys
                                        and set(actions) <= set(g.actions) for g in grants):
                problems.append(f"S3 {actions} on {resource}: not a global item")
    if any(a.startswith("kms:") for a in actions) and any(app_key in r for r in resources):
        problems.append(f"KMS {actions} on the app key: tenant data keys belong to the tenant role")
    return problems


# ------------------------------------------------------------------ the template ---


def _roles(synth: Synth, function_id: str) -> tuple[dict[str, Any], str, str, dict[str, Any]]:
    """(resources, execution role id, tenant role id, function environment)."""
    stack = synth.stateful if function_id in IDENTITY_IDS else synth.stateless
    template = synth.stateful_template if function_id in IDENTITY_IDS else synth.stateless_template
    resources = template.to_json()["Resources"]
    construct = stack.functions[function_id]
    function = resources[stack.get_logical_id(construct.function.node.default_child)]
    execution = function["Properties"]["Role"]["Fn::GetAtt"][0]
    tenant = stack.get_logical_id(construct.tenant_role.node.default_child)
    return resources, execution, tenant, function["Properties"]["Environment"]["Variables"]


def _app_key(synth: Synth, function_id: str = FUNCTION_IDS[0]) -> str:
    """The app key as the function's template names it (a reference in its own stack)."""
    env = _roles(synth, function_id)[3]
    return _flat(env["KEY_APP_ARN"])


@pytest.mark.parametrize("function_id", FUNCTION_IDS)
def test_tenant_role_is_assumable_only_by_the_functions_execution_role_with_a_tenant_tag(
        synth: Synth, function_id: str) -> None:
    resources, execution, tenant, env = _roles(synth, function_id)
    assert env["TENANT_ROLE_ARN"] == {"Fn::GetAtt": [tenant, "Arn"]}
    trust = resources[tenant]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert len(trust) == 1
    (statement,) = trust
    assert statement["Principal"] == {"AWS": {"Fn::GetAtt": [execution, "Arn"]}}
    assert sorted(_as_list(statement["Action"])) == ["sts:AssumeRole", "sts:TagSession"]
    assert statement["Condition"]["Null"] == {"aws:RequestTag/tenant": "false"}
    assert statement["Condition"]["ForAllValues:StringEquals"] == {"aws:TagKeys": ["tenant"]}
    assumes = [s for s in _statements(resources, execution) if _allows(s, "sts:")]
    assert [s["Resource"] for s in assumes] == [{"Fn::GetAtt": [tenant, "Arn"]}]


@pytest.mark.parametrize("function_id", FUNCTION_IDS)
def test_every_tenant_role_statement_is_conditioned_on_the_tenant_tag(synth: Synth, function_id: str) -> None:
    resources, _, tenant, _ = _roles(synth, function_id)
    statements = _statements(resources, tenant)
    problems = [p for s in statements for p in tenant_statement_problems(s)]
    assert problems == []
    definition = definitions.function(function_id)
    dynamo = [s for s in statements if _allows(s, "dynamodb:")]
    reached = {_table_of(_flat(r)) for s in dynamo for r in _as_list(s["Resource"])}
    assert reached == set(definition.writes) | set(definition.reads)
    writes = {_table_of(_flat(r)) for s in dynamo if "dynamodb:PutItem" in _as_list(s["Action"])
              for r in _as_list(s["Resource"]) if s["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
              == TENANT_KEYS}
    assert writes == set(definition.writes)
    s3 = [s for s in statements if _allows(s, "s3:")]
    buckets = {b[0] for s in s3 for r in _as_list(s["Resource"]) if (b := _bucket_of(_flat(r)))}
    declared = {*definition.buckets_write, *definition.buckets_read, *definition.buckets_upload,
                *definition.buckets_delete}
    assert buckets == declared
    # NOM-004 5.11: no version is ever erased, except the orders function's ORM^O01 of an order whose
    # transaction failed (infra.tenancy), under its tenant's hl7/outbox/ prefix only.
    erasing = [s for s in s3 if "s3:DeleteObjectVersion" in _as_list(s["Action"])]
    if function_id == "orders":
        assert len(erasing) == 1 and _as_list(erasing[0]["Action"]) == ["s3:DeleteObjectVersion"]
        assert [_bucket_of(_flat(r)) for r in _as_list(erasing[0]["Resource"])] == [
            ("documents", f"{TAG}/hl7/outbox/*")]
    else:
        assert erasing == []
    app = [s for s in statements
           if _allows(s, "kms:") and _app_key(synth, function_id) in map(_flat, _as_list(s["Resource"]))]
    assert [s["Condition"] for s in app] == [{"StringEquals": {tenancy.APP_KEY_CONTEXT: TAG}}]
    assert sorted(_as_list(app[0]["Action"])) == sorted(tenancy.APP_KEY_ACTIONS)


@pytest.mark.parametrize("function_id", FUNCTION_IDS)
def test_execution_role_reaches_only_global_items_and_denies_scan(synth: Synth, function_id: str) -> None:
    resources, execution, tenant, _ = _roles(synth, function_id)
    statements = _statements(resources, execution)
    problems = [p for s in statements
                for p in execution_statement_problems(function_id, s, _app_key(synth, function_id))]
    assert problems == []
    definition = definitions.function(function_id)
    if definition.writes or definition.reads:
        for role in (execution, tenant):
            assert any(s["Effect"] == "Deny" and s["Action"] == "dynamodb:Scan" for s in _statements(resources, role))
    granted = {(g.kind, g.resource) for g in tenancy.global_access(function_id)}
    present = {("table", _table_of(_flat(r))) for s in statements if _allows(s, "dynamodb:")
               for r in _as_list(s["Resource"])}
    present |= {("bucket", b[0]) for s in statements if _allows(s, "s3:") for r in _as_list(s["Resource"])
                if (b := _bucket_of(_flat(r)))}
    assert present == granted


def test_global_access_names_only_declared_tables_and_buckets() -> None:
    for grant in tenancy.GLOBAL_ACCESS:
        fn = definitions.function(grant.function)
        declared = (set(fn.writes) | set(fn.reads)) if grant.kind == "table" else {
            *fn.buckets_write, *fn.buckets_read, *fn.buckets_upload, *fn.buckets_delete}
        assert grant.resource in declared, grant
        assert grant.reason.strip()
        # A global pattern may not be one every tenant's keys match.
        assert not any(k in ("*#*", "{tenant}#*") for k in grant.keys)


# ------------------------------------------------------------------ the checks can fail ---


def test_a_dynamodb_statement_without_the_leading_keys_condition_is_flagged() -> None:
    bare = {"Effect": "Allow", "Action": ["dynamodb:GetItem"],
            "Resource": "arn:aws:dynamodb:r:a:table/expediente-patients"}
    assert tenant_statement_problems(bare)
    other = {**bare, "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["*"]},
                                   "Null": {"dynamodb:LeadingKeys": "false"}}}
    assert tenant_statement_problems(other)
    no_null = {**bare, "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": TENANT_KEYS}}}
    assert tenant_statement_problems(no_null) == ["DynamoDB statement lets requests without leading keys through"]
    good = {**bare, "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": TENANT_KEYS},
                                  "Null": {"dynamodb:LeadingKeys": "false"}}}
    assert tenant_statement_problems(good) == []


def test_an_s3_statement_on_the_whole_bucket_is_flagged() -> None:
    whole = {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::expediente-imaging-1-r/*"}
    assert tenant_statement_problems(whole)
    scoped = {**whole, "Resource": f"arn:aws:s3:::expediente-imaging-1-r/{TAG}/*"}
    assert tenant_statement_problems(scoped) == []


def test_an_execution_role_grant_on_tenant_data_is_flagged() -> None:
    table = {"Effect": "Allow", "Action": ["dynamodb:GetItem"],
             "Resource": "arn:aws:dynamodb:r:a:table/expediente-admin",
             "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": TENANT_KEYS},
                           "Null": {"dynamodb:LeadingKeys": "false"}}}
    assert execution_statement_problems("results", table, "app-key")
    registry = {**table, "Action": ["dynamodb:Query"],
                "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["TENANT#REGISTRY"]},
                              "Null": {"dynamodb:LeadingKeys": "false"}}}
    assert execution_statement_problems("results", registry, "app-key") == []
    assert execution_statement_problems("patients", registry, "app-key")  # not a global item of patients
    key = {"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": "arn:aws:kms:r:a:key/app-key"}
    assert execution_statement_problems("patients", key, "app-key")
