"""The stateless stack: one well-configured function per FunctionDef behind a guarded REST API."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from infra import definitions, delivery
from infra.constructs.function import ALIAS_NAME, COGNITO_ADMIN_ACTIONS, handler_for
from infra.constructs.waf import MAX_BODY_BYTES
from infra.definitions import GATEWAY_ERROR_MESSAGE as ERROR_MESSAGE
from infra.naming import table_name
from tests.infra.synth_support import Synth, of_type

pytestmark = pytest.mark.infra

FUNCTION_IDS = [f.id for f in definitions.FUNCTIONS]


def _function(synth: Synth, function_id: str) -> tuple[str, dict[str, Any]]:
    construct = synth.stateless.functions[function_id].function
    logical_id = synth.stateless.get_logical_id(construct.node.default_child)
    return logical_id, synth.stateless_template.to_json()["Resources"][logical_id]


def _policy_statements(resources: dict[str, Any], role_logical_id: str) -> list[dict[str, Any]]:
    return [
        s
        for p in of_type(resources, "AWS::IAM::Policy").values()
        if {"Ref": role_logical_id} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _alias_id(synth: Synth, function_id: str) -> str:
    return synth.stateless.get_logical_id(synth.stateless.functions[function_id].alias.node.default_child)


def _stateful_id(synth: Synth, construct: Any) -> str:
    return synth.stateful.get_logical_id(construct.node.default_child)


def test_one_function_per_definition(stateless_resources: dict[str, Any]) -> None:
    assert len(of_type(stateless_resources, "AWS::Lambda::Function")) == len(definitions.FUNCTIONS)


@pytest.mark.parametrize("function_id", FUNCTION_IDS)
def test_function_runs_python312_arm64_traced_with_snapstart_and_layer(synth: Synth, function_id: str) -> None:
    _, fn = _function(synth, function_id)
    props = fn["Properties"]
    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == handler_for(function_id)
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert props["LoggingConfig"]["LogFormat"] == "JSON"
    layers = of_type(synth.stateless_template.to_json()["Resources"], "AWS::Lambda::LayerVersion")
    assert props["Layers"] == [{"Ref": next(iter(layers))}]
    definition = definitions.function(function_id)
    assert props["MemorySize"] == definition.memory_mb
    assert props["Timeout"] == definition.timeout_s


@pytest.mark.parametrize("function_id", FUNCTION_IDS)
def test_function_environment_names_its_tables_and_shared_resources(synth: Synth, function_id: str) -> None:
    _, fn = _function(synth, function_id)
    env = fn["Properties"]["Environment"]["Variables"]
    definition = definitions.function(function_id)
    for table_id in (*definition.writes, *definition.reads):
        assert env[definitions.table(table_id).env] == table_name("", table_id)
    undeclared = {t.env for t in definitions.TABLES} - {
        definitions.table(t).env for t in (*definition.writes, *definition.reads)
    }
    assert not undeclared & set(env), "a function only learns the tables it declares"
    for name in ("KEY_APP_ARN", "EVENT_BUS_NAME", "USER_POOL_ID", "USER_POOL_CLIENT_ID"):
        assert name in env
    assert env["POWERTOOLS_SERVICE_NAME"] == f"expediente-{function_id}"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Expediente"
    touched = {*definition.buckets_write, *definition.buckets_read, *definition.buckets_upload,
               *definition.buckets_delete}
    for bucket_def in definitions.BUCKETS:
        assert (bucket_def.env in env) == (bucket_def.id in touched)


@pytest.mark.parametrize("function_id", FUNCTION_IDS)
def test_function_is_published_behind_the_live_alias(synth: Synth, function_id: str) -> None:
    logical_id, _ = _function(synth, function_id)
    resources = synth.stateless_template.to_json()["Resources"]
    aliases = [a["Properties"] for a in of_type(resources, "AWS::Lambda::Alias").values()
               if a["Properties"]["FunctionName"] == {"Ref": logical_id}]
    assert len(aliases) == 1
    assert aliases[0]["Name"] == ALIAS_NAME
    version_id = aliases[0]["FunctionVersion"]["Fn::GetAtt"][0]
    assert resources[version_id]["Type"] == "AWS::Lambda::Version"


@pytest.mark.parametrize("function_id", FUNCTION_IDS)
def test_function_logs_to_its_own_encrypted_log_group(synth: Synth, function_id: str) -> None:
    _, fn = _function(synth, function_id)
    group_id = fn["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    group = synth.stateless_template.to_json()["Resources"][group_id]
    assert "KmsKeyId" in group["Properties"]
    assert group["Properties"]["RetentionInDays"] >= 365


@pytest.mark.parametrize("function_id", FUNCTION_IDS)
def test_function_has_an_errors_alarm_that_notifies(synth: Synth, function_id: str) -> None:
    alarm = synth.stateless.functions[function_id].errors_alarm
    props = synth.stateless_template.to_json()["Resources"][
        synth.stateless.get_logical_id(alarm.node.default_child)]["Properties"]
    assert props["MetricName"] == "Errors"
    assert props["AlarmActions"]


@pytest.mark.parametrize("function_id", FUNCTION_IDS)
def test_function_role_is_least_privilege(synth: Synth, function_id: str) -> None:
    resources = synth.stateless_template.to_json()["Resources"]
    _, fn = _function(synth, function_id)
    role_id = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    assert "ManagedPolicyArns" not in resources[role_id]["Properties"]
    # What the function reaches: its execution role and the tenant data role it assumes (decision 0023;
    # tests/infra/test_infra_tenant_scope.py checks which of the two holds what).
    tenant_role = synth.stateless.functions[function_id].tenant_role
    tenant_role_id = synth.stateless.get_logical_id(tenant_role.node.default_child)
    statements = _policy_statements(resources, role_id) + _policy_statements(resources, tenant_role_id)
    allowed_dynamo = [s for s in statements if s["Effect"] == "Allow"
                      and any(a.startswith("dynamodb:") for a in _as_list(s["Action"]))]
    for statement in allowed_dynamo:
        assert "*" not in _as_list(statement["Resource"]), "DynamoDB actions must name their tables"
    definition = definitions.function(function_id)
    granted = json.dumps(allowed_dynamo)
    for table_def in definitions.TABLES:
        name = f"table/{table_name('', table_def.id)}\""
        assert (name in granted) == (table_def.id in (*definition.writes, *definition.reads)), table_def.id
    # Decision 5: no Scan in a request path.
    assert any(s["Effect"] == "Deny" and s["Action"] == "dynamodb:Scan" for s in statements)

    cognito = [a for s in statements for a in _as_list(s["Action"]) if a.startswith("cognito-idp:")]
    assert sorted(cognito) == (sorted(COGNITO_ADMIN_ACTIONS) if definition.cognito_admin else [])
    puts_events = any("events:PutEvents" in _as_list(s["Action"]) for s in statements)
    assert puts_events == definition.puts_events

    # Buckets: only the declared ones, each with what it was declared for. Never DeleteObjectVersion
    # (NOM-004 5.11): a function that moves objects out of a bucket may only add a delete marker. The one
    # exception is the erase of an uncommitted order's ORM^O01 (infra.tenancy; tests/infra/test_infra_tenant_scope).
    allowed_s3 = [s for s in statements if s["Effect"] == "Allow"
                  and any(a.startswith("s3:") for a in _as_list(s["Action"]))]
    deletes = [s for s in allowed_s3 if any(a.startswith("s3:Delete") for a in _as_list(s["Action"]))]
    erases = [s for s in deletes if "s3:DeleteObjectVersion" in _as_list(s["Action"])]
    assert all("/hl7/outbox/*" in json.dumps(s["Resource"]) for s in erases)
    assert bool(erases) == (function_id == "orders")
    assert all(a == "s3:DeleteObject" for s in deletes if s not in erases for a in _as_list(s["Action"])
               if a.startswith("s3:Delete"))
    for bucket_def in definitions.BUCKETS:
        prefix = f":s3:::expediente-{bucket_def.id.replace('_', '-')}-"  # infra.naming.bucket_name
        on_bucket = [s for s in allowed_s3 if prefix in json.dumps(s["Resource"])]
        actions = {a for s in on_bucket for a in _as_list(s["Action"])}
        assert ("s3:GetObject" in actions) == (bucket_def.id in (*definition.buckets_write,
                                                                   *definition.buckets_read)), bucket_def.id
        assert ("s3:PutObject" in actions) == (bucket_def.id in (*definition.buckets_write,
                                                                   *definition.buckets_upload)), bucket_def.id
        assert ("s3:DeleteObject" in actions) == (bucket_def.id in definition.buckets_delete), bucket_def.id

    # Queues: only the ones it consumes, with what the event source poller needs.
    allowed_sqs = [s for s in statements if s["Effect"] == "Allow"
                   and any(a.startswith("sqs:") for a in _as_list(s["Action"]))]
    granted_sqs = json.dumps(allowed_sqs)
    for queue_id, queue in synth.stateful.queues.items():
        assert (_stateful_id(synth, queue) in granted_sqs) == (queue_id in definition.consumes), queue_id
    messaging_key = _stateful_id(synth, synth.stateful.messaging_key)
    kms_on_messaging_key = [a for s in statements if s["Effect"] == "Allow" and messaging_key in json.dumps(s)
                            for a in _as_list(s["Action"])]
    if definition.consumes:
        actions = {a for s in allowed_sqs for a in _as_list(s["Action"])}
        assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                "sqs:GetQueueAttributes"} <= actions
        assert not [a for a in actions if "*" in a or a in ("sqs:SendMessage", "sqs:PurgeQueue")]
        assert kms_on_messaging_key == ["kms:Decrypt"], "messages are decrypted through the consume grant"
    else:
        assert allowed_sqs == []
        assert kms_on_messaging_key == []


def test_no_policy_allows_dynamodb_on_every_resource(stateful_resources: dict[str, Any],
                                                     stateless_resources: dict[str, Any]) -> None:
    policies = {**of_type(stateful_resources, "AWS::IAM::Policy"), **of_type(stateless_resources, "AWS::IAM::Policy")}
    for logical_id, policy in policies.items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Allow" and any(a.startswith("dynamodb:") for a in _as_list(statement["Action"])):
                assert "*" not in _as_list(statement["Resource"]), logical_id


def _methods(synth: Synth) -> dict[tuple[str, str], dict[str, Any]]:
    """(path, HTTP method) -> method properties, with paths rebuilt from the resource tree."""
    resources = synth.stateless_template.to_json()["Resources"]
    api_id = synth.stateless.get_logical_id(synth.stateless.api.node.default_child)
    parts = {k: (v["Properties"]["ParentId"], v["Properties"]["PathPart"])
             for k, v in of_type(resources, "AWS::ApiGateway::Resource").items()}

    def path(resource_ref: dict[str, Any]) -> str:
        if "Fn::GetAtt" in resource_ref:  # the API's root resource
            assert resource_ref["Fn::GetAtt"][0] == api_id
            return ""
        parent, part = parts[resource_ref["Ref"]]
        return f"{path(parent)}/{part}"

    return {(path(m["Properties"]["ResourceId"]), m["Properties"]["HttpMethod"]): m["Properties"]
            for m in of_type(resources, "AWS::ApiGateway::Method").values()}


def test_routes_are_exactly_the_defined_ones(synth: Synth) -> None:
    expected = {(route, "ANY") for f in definitions.FUNCTIONS for route in f.routes}
    expected |= {(route, "GET") for f in definitions.FUNCTIONS for route in f.public_routes}
    assert set(_methods(synth)) == expected


def test_every_non_public_method_uses_the_cognito_authorizer(synth: Synth) -> None:
    public = {route for f in definitions.FUNCTIONS for route in f.public_routes}
    authorizers = of_type(synth.stateless_template.to_json()["Resources"], "AWS::ApiGateway::Authorizer")
    (authorizer_id, authorizer), = authorizers.items()
    assert authorizer["Properties"]["Type"] == "COGNITO_USER_POOLS"
    for (path, verb), method in _methods(synth).items():
        if path in public:
            assert (verb, method["AuthorizationType"]) == ("GET", "NONE")
        else:
            assert method["AuthorizationType"] == "COGNITO_USER_POOLS", path
            assert method["AuthorizerId"] == {"Ref": authorizer_id}, path


def test_every_method_validates_requests_and_calls_the_live_alias(synth: Synth) -> None:
    owner = {route: f.id for f in definitions.FUNCTIONS for route in (*f.routes, *f.public_routes)}
    for (path, _), method in _methods(synth).items():
        assert "RequestValidatorId" in method
        alias = synth.stateless.functions[owner[path]].alias
        alias_id = synth.stateless.get_logical_id(alias.node.default_child)
        assert method["Integration"]["Type"] == "AWS_PROXY"
        assert alias_id in json.dumps(method["Integration"]["Uri"]), path


def test_stage_traces_logs_and_throttles(stateless_resources: dict[str, Any]) -> None:
    (stage,) = of_type(stateless_resources, "AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    assert props["TracingEnabled"] is True
    assert "DestinationArn" in props["AccessLogSetting"]
    (settings,) = props["MethodSettings"]
    assert settings["LoggingLevel"] in ("ERROR", "INFO")
    assert settings["DataTraceEnabled"] is False, "request bodies carry patient data"
    assert settings["ThrottlingRateLimit"] > 0
    assert settings["ThrottlingBurstLimit"] > 0


def test_gateway_errors_are_operation_outcomes(stateless_resources: dict[str, Any]) -> None:
    responses = of_type(stateless_resources, "AWS::ApiGateway::GatewayResponse")
    types = {r["Properties"]["ResponseType"] for r in responses.values()}
    assert {"UNAUTHORIZED", "ACCESS_DENIED", "DEFAULT_4XX", "DEFAULT_5XX", "THROTTLED"} <= types
    for response in responses.values():
        template = response["Properties"]["ResponseTemplates"]["application/json"]
        # API Gateway renders $context.error.messageString as a quoted JSON string.
        body = json.loads(template.replace(ERROR_MESSAGE, '"Invalid request body"'))
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["code"]


def test_waf_guards_the_stage_with_managed_rules_rate_and_size_limits(stateless_resources: dict[str, Any]) -> None:
    (acl_id, acl), = of_type(stateless_resources, "AWS::WAFv2::WebACL").items()
    (association,) = of_type(stateless_resources, "AWS::WAFv2::WebACLAssociation").values()
    assert association["Properties"]["WebACLArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    stage_id = next(iter(of_type(stateless_resources, "AWS::ApiGateway::Stage")))
    assert stage_id in json.dumps(association["Properties"]["ResourceArn"])

    rules = {r["Name"]: r for r in acl["Properties"]["Rules"]}
    managed = {r["Statement"]["ManagedRuleGroupStatement"]["Name"]
               for r in rules.values() if "ManagedRuleGroupStatement" in r["Statement"]}
    assert {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"} <= managed
    assert rules["RateLimitPerIp"]["Statement"]["RateBasedStatement"]["AggregateKeyType"] == "IP"
    size_rule = rules["BodyTooLarge"]
    assert "Block" in size_rule["Action"]
    assert size_rule["Statement"]["RegexMatchStatement"]["FieldToMatch"] == {
        "SingleHeader": {"Name": "content-length"}}
    (logging,) = of_type(stateless_resources, "AWS::WAFv2::LoggingConfiguration").values()
    assert {"SingleHeader": {"Name": "authorization"}} in logging["Properties"]["RedactedFields"]


def test_hl7v2_routes_take_er7_text_bodies(synth: Synth, stateless_resources: dict[str, Any]) -> None:
    """``/hl7v2`` receives ``x-application/hl7-v2+er7`` or ``text/plain``: nothing may refuse or re-encode it."""
    methods = _methods(synth)
    hl7 = {path: method for (path, _), method in methods.items() if path.split("/")[1] == "hl7v2"}
    assert set(hl7) == set(definitions.function("hl7v2").routes)
    # A request model would make the validator refuse any body that is not JSON of that schema.
    assert not [path for (path, _), method in methods.items() if method.get("RequestModels")]
    for method in hl7.values():
        assert method["Integration"]["Type"] == "AWS_PROXY"
        assert "ContentHandling" not in method["Integration"]
        assert method["AuthorizationType"] == "COGNITO_USER_POOLS"
    # A binary media type matching a text body would hand it to the function base64-encoded.
    (api,) = of_type(stateless_resources, "AWS::ApiGateway::RestApi").values()
    binary = api["Properties"].get("BinaryMediaTypes", [])
    assert not [t for t in binary if "*" in t or t.startswith("text/") or "hl7" in t], binary


def test_waf_lets_bodies_up_to_the_api_limit_through_on_every_route(stateless_resources: dict[str, Any]) -> None:
    """HL7 v2 batches, like FHIR Bundles, may be as large as the API's 1 MiB body limit."""
    from local.frontdoor import MAX_BODY_BYTES as LOCAL_MAX_BODY_BYTES

    assert MAX_BODY_BYTES == LOCAL_MAX_BODY_BYTES == 1024 * 1024
    (acl,) = of_type(stateless_resources, "AWS::WAFv2::WebACL").values()
    rules = {r["Name"]: r for r in acl["Properties"]["Rules"]}
    size = rules["BodyTooLarge"]["Statement"]["RegexMatchStatement"]
    assert not re.match(size["RegexString"], str(MAX_BODY_BYTES))
    assert re.match(size["RegexString"], str(MAX_BODY_BYTES + 1))
    # The managed 8 KB body rule only counts; no rule is scoped to a path (none exempts or targets /hl7v2).
    overrides = rules["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]["RuleActionOverrides"]
    assert {"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}} in overrides
    assert "UriPath" not in json.dumps(acl["Properties"]["Rules"])


@pytest.mark.parametrize("schedule", definitions.SCHEDULES, ids=lambda s: s.id)
def test_schedule_invokes_the_function_alias_at_its_rate_on_the_default_bus(
    synth: Synth, stateless_resources: dict[str, Any], schedule: definitions.ScheduleDef,
) -> None:
    rule_id = synth.stateless.get_logical_id(synth.stateless.schedules[schedule.id].node.default_child)
    rule = stateless_resources[rule_id]["Properties"]
    assert "EventBusName" not in rule, "schedules live on the default bus"
    assert "EventPattern" not in rule
    assert delivery.rate_minutes(rule["ScheduleExpression"]) == schedule.minutes
    assert rule.get("State", "ENABLED") == "ENABLED"
    (target,) = rule["Targets"]
    alias_id = _alias_id(synth, schedule.function)
    assert target["Arn"] == {"Ref": alias_id}, "the SnapStart alias, not $LATEST"
    assert not {"Input", "InputPath", "InputTransformer"} & set(target), "the standard Scheduled Event"
    permissions = [p["Properties"] for p in of_type(stateless_resources, "AWS::Lambda::Permission").values()
                   if p["Properties"]["FunctionName"] == {"Ref": alias_id}
                   and p["Properties"]["Principal"] == "events.amazonaws.com"]
    assert [p["SourceArn"] for p in permissions] == [{"Fn::GetAtt": [rule_id, "Arn"]}]


def test_only_the_declared_schedules_exist(stateful_resources: dict[str, Any],
                                           stateless_resources: dict[str, Any]) -> None:
    scheduled = [r for r in (*of_type(stateful_resources, "AWS::Events::Rule").values(),
                             *of_type(stateless_resources, "AWS::Events::Rule").values())
                 if "ScheduleExpression" in r["Properties"]]
    assert len(scheduled) == len(definitions.SCHEDULES)


@pytest.mark.parametrize("function_id", FUNCTION_IDS)
def test_consumed_queues_feed_the_alias_in_batches_reporting_item_failures(
    synth: Synth, stateless_resources: dict[str, Any], function_id: str,
) -> None:
    definition = definitions.function(function_id)
    alias_id = _alias_id(synth, function_id)
    function_logical_id, _ = _function(synth, function_id)
    mappings = [m["Properties"] for m in of_type(stateless_resources, "AWS::Lambda::EventSourceMapping").values()
                if alias_id in json.dumps(m["Properties"]["FunctionName"])]
    assert len(mappings) == len(definition.consumes)
    for queue_id in definition.consumes:
        queue_logical_id = _stateful_id(synth, synth.stateful.queues[queue_id])
        (mapping,) = [m for m in mappings if queue_logical_id in json.dumps(m["EventSourceArn"])]
        assert f":{ALIAS_NAME}" in json.dumps(mapping["FunctionName"])
        assert {"Ref": function_logical_id} != mapping["FunctionName"]
        assert mapping["BatchSize"] == delivery.CONSUMER_BATCH_SIZE
        assert mapping["MaximumBatchingWindowInSeconds"] == delivery.CONSUMER_BATCHING_WINDOW_S
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping.get("Enabled", True) is True


def test_every_event_source_mapping_is_declared(stateless_resources: dict[str, Any]) -> None:
    declared = sum(len(f.consumes) for f in definitions.FUNCTIONS)
    assert declared >= 1
    assert len(of_type(stateless_resources, "AWS::Lambda::EventSourceMapping")) == declared


def test_api_url_is_an_output(synth: Synth) -> None:
    assert "ApiUrl" in synth.stateless_template.to_json()["Outputs"]


def test_cognito_admin_grant_covers_every_cognito_call_in_the_code() -> None:
    """A Cognito call missing from the grant would fail with AccessDenied only once deployed."""
    import re
    from pathlib import Path

    import botocore.session

    operations = set(botocore.session.get_session().get_service_model("cognito-idp").operation_names)
    granted = {action.split(":", 1)[1] for action in COGNITO_ADMIN_ACTIONS}
    repo = Path(__file__).resolve().parents[2]
    for fn in definitions.FUNCTIONS:
        if not fn.cognito_admin:
            continue
        called = set()
        for source in (repo / "functions" / fn.id).rglob("*.py"):
            for word in re.findall(r"\b(?:admin|list)_[a-z_]+", source.read_text()):
                operation = "".join(part.capitalize() for part in word.split("_"))
                if operation in operations:
                    called.add(operation)
        assert called <= granted, f"{fn.id} calls {sorted(called - granted)} without a grant"


@pytest.mark.parametrize("function_id", FUNCTION_IDS)
def test_signing_key_grants_are_limited_to_practitioner_keys(synth: Synth, function_id: str) -> None:
    """Only the admin function creates practitioners' keys and only notes signs; both only on tagged keys."""
    resources = synth.stateless_template.to_json()["Resources"]
    _, fn = _function(synth, function_id)
    statements = _policy_statements(resources, fn["Properties"]["Role"]["Fn::GetAtt"][0])
    digest_key = _stateful_id(synth, synth.stateful.audit_digest_key)
    signing = [s for s in statements if s["Effect"] == "Allow" and any(
        a in ("kms:CreateKey", "kms:Sign", "kms:GetPublicKey", "kms:ScheduleKeyDeletion", "kms:TagResource")
        for a in _as_list(s["Action"])) and digest_key not in json.dumps(s["Resource"])]
    use = definitions.function(function_id).signing_keys
    actions = sorted(a for s in signing for a in _as_list(s["Action"]))
    expected = {
        "create": ["kms:CreateKey", "kms:GetPublicKey", "kms:ScheduleKeyDeletion", "kms:TagResource"],
        "sign": ["kms:Sign"],
        "": [],
    }[use]
    assert actions == expected
    for statement in signing:
        conditions = statement["Condition"]["StringEquals"]
        tag = next(v for k, v in conditions.items() if k.startswith("aws:") and k.endswith("Tag/purpose"))
        assert tag == "practitioner-signing"
        if "kms:CreateKey" in _as_list(statement["Action"]):
            assert conditions["kms:KeySpec"] == "ECC_NIST_P256"
            assert conditions["kms:KeyUsage"] == "SIGN_VERIFY"
        if "kms:Sign" in _as_list(statement["Action"]):
            assert conditions["kms:SigningAlgorithm"] == "ECDSA_SHA_256"


@pytest.mark.parametrize("function_id", FUNCTION_IDS)
def test_only_the_audit_digest_job_signs_with_the_digest_key(synth: Synth, function_id: str) -> None:
    """Decisions 0022, 0029: kms:Sign on the digest key for the function the schedule runs only; the function that
    serves $verify reads the public key; no other function touches the key."""
    resources = synth.stateless_template.to_json()["Resources"]
    _, fn = _function(synth, function_id)
    statements = _policy_statements(resources, fn["Properties"]["Role"]["Fn::GetAtt"][0])
    digest_key = _stateful_id(synth, synth.stateful.audit_digest_key)
    on_key = sorted(a for s in statements if s["Effect"] == "Allow" and digest_key in json.dumps(s["Resource"])
                    for a in _as_list(s["Action"]))
    runs_job = any(s.id == "audit_digest" and s.function == function_id for s in definitions.SCHEDULES)
    verifies = function_id == definitions.AUDIT_VERIFY_FUNCTION
    assert not (runs_job and verifies)  # the API function never signs digests
    assert on_key == (["kms:GetPublicKey", "kms:Sign"] if runs_job else ["kms:GetPublicKey"] if verifies else [])
    env = fn["Properties"]["Environment"]["Variables"]
    assert ("KEY_AUDIT_DIGEST_ARN" in env) == (runs_job or verifies)


def test_binary_responses_are_declared(synth: Synth) -> None:
    """The PDF report and the PNG thumbnail leave the functions base64-encoded; API Gateway decodes them."""
    [api] = of_type(synth.stateless_template.to_json()["Resources"], "AWS::ApiGateway::RestApi").values()
    assert set(api["Properties"]["BinaryMediaTypes"]) == {"application/pdf", "image/png"}
