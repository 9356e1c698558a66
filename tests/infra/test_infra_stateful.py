"""The stateful stack matches infra.definitions and keeps data safe (encryption, retention, audit)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

from infra import definitions, delivery
from infra.naming import pascal, sign_in_log_group_name, table_name
from tests.infra.synth_support import Synth, of_type

pytestmark = pytest.mark.infra


def _table(resources: dict[str, Any], table_id: str) -> dict[str, Any]:
    matches = [r for r in of_type(resources, "AWS::DynamoDB::Table").values()
               if r["Properties"]["TableName"] == table_name("", table_id)]
    assert len(matches) == 1, f"expected one table {table_id}"
    return matches[0]


def _ref_or_arn_of(logical_id: str) -> list[dict[str, Any]]:
    return [{"Ref": logical_id}, {"Fn::GetAtt": [logical_id, "Arn"]}]


def test_there_is_one_table_per_definition(stateful_resources: dict[str, Any]) -> None:
    assert len(of_type(stateful_resources, "AWS::DynamoDB::Table")) == len(definitions.TABLES)


@pytest.mark.parametrize("table_def", definitions.TABLES, ids=lambda t: t.id)
def test_table_is_encrypted_recoverable_protected_and_retained(
    stateful_resources: dict[str, Any], table_def: definitions.TableDef,
) -> None:
    table = _table(stateful_resources, table_def.id)
    props = table["Properties"]
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["SSESpecification"]["SSEType"] == "KMS"
    assert "KMSMasterKeyId" in props["SSESpecification"], "table must use the customer-managed key"
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["DeletionProtectionEnabled"] is True
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"


@pytest.mark.parametrize("table_def", definitions.TABLES, ids=lambda t: t.id)
def test_table_keys_indexes_and_ttl_match_definition(
    stateful_resources: dict[str, Any], table_def: definitions.TableDef,
) -> None:
    props = _table(stateful_resources, table_def.id)["Properties"]
    expected_schema = [{"AttributeName": table_def.pk, "KeyType": "HASH"}]
    if table_def.sk:
        expected_schema.append({"AttributeName": table_def.sk, "KeyType": "RANGE"})
    assert props["KeySchema"] == expected_schema

    expected_indexes = {
        index.name: [{"AttributeName": index.pk, "KeyType": "HASH"},
                     {"AttributeName": index.sk, "KeyType": "RANGE"}]
        for index in table_def.indexes
    }
    actual = {g["IndexName"]: g for g in props.get("GlobalSecondaryIndexes", [])}
    assert {name: g["KeySchema"] for name, g in actual.items()} == expected_indexes
    assert all(g["Projection"]["ProjectionType"] == "ALL" for g in actual.values())

    # Every key attribute is a string, and only key attributes are declared.
    key_names = {table_def.pk, table_def.sk} - {None}
    for index in table_def.indexes:
        key_names |= {index.pk, index.sk}
    assert {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]} == dict.fromkeys(
        key_names, "S"
    )

    if table_def.ttl_attribute:
        assert props["TimeToLiveSpecification"] == {"AttributeName": table_def.ttl_attribute, "Enabled": True}
    else:
        assert "TimeToLiveSpecification" not in props


def test_backup_plan_selects_every_table(stateful_resources: dict[str, Any]) -> None:
    selections = of_type(stateful_resources, "AWS::Backup::BackupSelection")
    assert len(selections) == 1
    selected = json.dumps(next(iter(selections.values()))["Properties"]["BackupSelection"]["Resources"])
    for logical_id in of_type(stateful_resources, "AWS::DynamoDB::Table"):
        assert logical_id in selected
    plan = next(iter(of_type(stateful_resources, "AWS::Backup::BackupPlan").values()))
    retentions = [r["Lifecycle"]["DeleteAfterDays"] for r in plan["Properties"]["BackupPlan"]["BackupPlanRule"]]
    assert max(retentions) >= 5 * 365, "monthly backups kept five years (NOM-004 5.4)"


def test_every_kms_key_rotates_and_is_retained(stateful_resources: dict[str, Any]) -> None:
    keys = of_type(stateful_resources, "AWS::KMS::Key")
    assert len(keys) >= 3
    for key in keys.values():
        # KMS rotates symmetric keys only; the audit digest signing key is asymmetric (decision 0022).
        if key["Properties"].get("KeyUsage") != "SIGN_VERIFY":
            assert key["Properties"]["EnableKeyRotation"] is True
        assert key["DeletionPolicy"] == "Retain"


def test_audit_digests_have_an_ecdsa_key_and_a_compliance_locked_bucket(synth: Synth,
                                                                      stateful_resources: dict[str, Any]) -> None:
    """ASTM E2147 (decision 0022): digests signed with ECDSA P-256 and kept unalterable at least ten years."""
    key_id = synth.stateful.get_logical_id(synth.stateful.audit_digest_key.node.default_child)
    key = stateful_resources[key_id]["Properties"]
    assert (key["KeySpec"], key["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")
    bucket_id = synth.stateful.get_logical_id(synth.stateful.buckets["audit_digests"].node.default_child)
    bucket = stateful_resources[bucket_id]["Properties"]
    assert bucket["ObjectLockEnabled"] is True
    retention = bucket["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]
    assert retention["Mode"] == "COMPLIANCE" and retention["Days"] >= 10 * 365 + 2
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    locked = [b for b in definitions.BUCKETS if b.object_lock_years]
    assert [b.id for b in locked] == ["audit_digests"]


def test_logs_key_lets_cloudwatch_logs_encrypt_only_this_accounts_log_groups(synth: Synth) -> None:
    key_id = synth.stateful.get_logical_id(synth.stateful.logs_key.node.default_child)
    statements = synth.stateful_template.to_json()["Resources"][key_id]["Properties"]["KeyPolicy"]["Statement"]
    logs_statements = [s for s in statements if "logs." in json.dumps(s.get("Principal", {}))]
    assert len(logs_statements) == 1
    assert "kms:GenerateDataKey*" in logs_statements[0]["Action"]
    assert "kms:EncryptionContext:aws:logs:arn" in logs_statements[0]["Condition"]["ArnLike"]


def test_app_key_arn_is_exported(synth: Synth) -> None:
    outputs = synth.stateful_template.to_json()["Outputs"]
    app_key_id = synth.stateful.get_logical_id(synth.stateful.app_key.node.default_child)
    assert outputs["AppKeyArn"]["Value"] == {"Fn::GetAtt": [app_key_id, "Arn"]}
    assert outputs["AppKeyArn"]["Export"]["Name"] == "Expediente-AppKeyArn"


def _bucket_ids(synth: Synth) -> dict[str, str]:
    return {b_id: synth.stateful.get_logical_id(b.node.default_child) for b_id, b in synth.stateful.buckets.items()}


@pytest.mark.parametrize("bucket_def", definitions.BUCKETS, ids=lambda b: b.id)
def test_bucket_is_kms_encrypted_versioned_private_logged_and_retained(
    synth: Synth, stateful_resources: dict[str, Any], bucket_def: definitions.BucketDef,
) -> None:
    logical_id = _bucket_ids(synth)[bucket_def.id]
    bucket = stateful_resources[logical_id]
    props = bucket["Properties"]
    sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert sse["SSEAlgorithm"] == "aws:kms"
    storage_key = synth.stateful.get_logical_id(synth.stateful.storage_key.node.default_child)
    assert sse["KMSMasterKeyID"] == {"Fn::GetAtt": [storage_key, "Arn"]}
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(props["PublicAccessBlockConfiguration"][k] for k in (
        "BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"))
    access_logs = synth.stateful.get_logical_id(synth.stateful.access_logs_bucket.node.default_child)
    assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": access_logs}
    assert bucket["DeletionPolicy"] == "Retain"
    assert bucket["UpdateReplacePolicy"] == "Retain"


def test_every_bucket_denies_requests_without_tls(stateful_resources: dict[str, Any]) -> None:
    buckets = of_type(stateful_resources, "AWS::S3::Bucket")
    policies = of_type(stateful_resources, "AWS::S3::BucketPolicy").values()
    tls_only = {
        json.dumps(p["Properties"]["Bucket"])
        for p in policies
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
    }
    for logical_id in buckets:
        assert json.dumps({"Ref": logical_id}) in tls_only, f"{logical_id} accepts plain HTTP"


def test_no_bucket_is_emptied_on_stack_deletion(stateful_resources: dict[str, Any]) -> None:
    assert not of_type(stateful_resources, "Custom::S3AutoDeleteObjects")
    for bucket in of_type(stateful_resources, "AWS::S3::Bucket").values():
        assert bucket["DeletionPolicy"] == "Retain"


def test_ingest_uploads_notify_a_queue_with_a_dead_letter_queue(synth: Synth,
                                                                 stateful_resources: dict[str, Any]) -> None:
    ingest = stateful_resources[_bucket_ids(synth)["ingest"]]["Properties"]
    queue_id = synth.stateful.get_logical_id(synth.stateful.ingest_queue.node.default_child)
    assert ingest["NotificationConfiguration"]["QueueConfigurations"] == [
        {"Event": "s3:ObjectCreated:*", "Queue": {"Fn::GetAtt": [queue_id, "Arn"]}},
    ]
    queue = stateful_resources[queue_id]["Properties"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 1
    assert "KmsMasterKeyId" in queue


def test_every_queue_is_kms_encrypted_and_tls_only(stateful_resources: dict[str, Any]) -> None:
    queues = of_type(stateful_resources, "AWS::SQS::Queue")
    assert len(queues) == 2 * len(definitions.QUEUES)  # each with its DLQ
    for queue in queues.values():
        assert "KmsMasterKeyId" in queue["Properties"]
    denied = json.dumps([
        p["Properties"]["Queues"] for p in of_type(stateful_resources, "AWS::SQS::QueuePolicy").values()
        if any(s["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(s)
               for s in p["Properties"]["PolicyDocument"]["Statement"])
    ])
    for logical_id in queues:
        assert logical_id in denied, f"{logical_id} accepts plain HTTP"


def _logical_id(synth: Synth, construct: Any) -> str:
    return synth.stateful.get_logical_id(construct.node.default_child)


@pytest.mark.parametrize("rule_def", definitions.RULES, ids=lambda r: r.id)
def test_rule_routes_its_detail_types_on_the_custom_bus_to_its_queue_and_topics(
    synth: Synth, stateful_resources: dict[str, Any], rule_def: definitions.RuleDef,
) -> None:
    bus_id = _logical_id(synth, synth.stateful.event_bus)
    queue = synth.stateful.queues[rule_def.target_queue]
    dlq = {"Arn": {"Fn::GetAtt": [_logical_id(synth, queue.dead_letter_queue.queue), "Arn"]}}
    topic_targets = [
        Match.object_like({"Arn": {"Ref": _logical_id(synth, synth.stateful.topics[topic_id])},
                           "DeadLetterConfig": dlq})
        for topic_id in rule_def.target_topics
    ]
    rule = stateful_resources[_logical_id(synth, synth.stateful.rules[rule_def.id])]["Properties"]
    assert rule["EventBusName"] == {"Ref": bus_id}
    assert rule["EventPattern"] == {"source": [rule_def.source], "detail-type": list(rule_def.detail_types)}
    assert len(rule["Targets"]) == 1 + len(rule_def.target_topics), "its queue and each of its topics, nothing else"
    synth.stateful_template.has_resource_properties("AWS::Events::Rule", {
        "EventPattern": {"source": [rule_def.source], "detail-type": list(rule_def.detail_types)},
        "Targets": [
            Match.object_like({"Arn": {"Fn::GetAtt": [_logical_id(synth, queue), "Arn"]}, "DeadLetterConfig": dlq}),
            *topic_targets,
        ],
    })


def test_the_critical_results_rule_notifies_a_topic() -> None:
    """The definitions this file checks generically: guard against them silently losing the topic target."""
    rule = next(r for r in definitions.RULES if r.id == "critical_results")
    assert rule.target_topics == ("critical_notifications",)
    assert {"CriticalResultDetected", "CriticalResultEscalated"} <= set(rule.detail_types)


def test_there_is_one_topic_per_definition_plus_the_alarm_topic(synth: Synth,
                                                                stateful_resources: dict[str, Any]) -> None:
    topics = of_type(stateful_resources, "AWS::SNS::Topic")
    expected = (*synth.stateful.topics.values(), synth.stateful.alarm_topic)
    assert set(topics) == {_logical_id(synth, t) for t in expected}
    assert set(synth.stateful.topics) == {t.id for t in definitions.TOPICS}


@pytest.mark.parametrize("topic_def", definitions.TOPICS, ids=lambda t: t.id)
def test_topic_is_encrypted_with_the_messaging_key_and_tls_only(
    synth: Synth, stateful_resources: dict[str, Any], topic_def: definitions.TopicDef,
) -> None:
    topic_id = _logical_id(synth, synth.stateful.topics[topic_def.id])
    props = stateful_resources[topic_id]["Properties"]
    assert props["KmsMasterKeyId"] == {"Fn::GetAtt": [_logical_id(synth, synth.stateful.messaging_key), "Arn"]}
    statements = [
        s for p in of_type(stateful_resources, "AWS::SNS::TopicPolicy").values()
        if {"Ref": topic_id} in p["Properties"]["Topics"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
               for s in statements), "publishing without TLS must be denied"
    outputs = synth.stateful_template.to_json()["Outputs"]
    assert outputs[f"{pascal(topic_def.id)}TopicArn"]["Value"] == {"Ref": topic_id}, "channels subscribe to this ARN"


@pytest.mark.parametrize("topic_id", sorted({t for r in definitions.RULES for t in r.target_topics}))
def test_eventbridge_may_publish_to_the_encrypted_topic(synth: Synth, stateful_resources: dict[str, Any],
                                                        topic_id: str) -> None:
    """SNS refuses EventBridge's publish unless the topic policy and the topic's key both allow it."""
    logical_id = _logical_id(synth, synth.stateful.topics[topic_id])
    topic_statements = [
        s for p in of_type(stateful_resources, "AWS::SNS::TopicPolicy").values()
        if {"Ref": logical_id} in p["Properties"]["Topics"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert any(s["Effect"] == "Allow" and s["Principal"] == {"Service": "events.amazonaws.com"}
               and s["Action"] == "sns:Publish" and s["Resource"] == {"Ref": logical_id} for s in topic_statements)
    key = stateful_resources[_logical_id(synth, synth.stateful.messaging_key)]["Properties"]["KeyPolicy"]
    allowed: set[str] = set()
    for statement in key["Statement"]:
        services = statement.get("Principal", {}).get("Service", [])
        if statement["Effect"] == "Allow" and "events.amazonaws.com" in (
                services if isinstance(services, list) else [services]):
            actions = statement["Action"]
            allowed |= set(actions if isinstance(actions, list) else [actions])
    assert {"kms:Decrypt", "kms:GenerateDataKey*"} <= allowed


@pytest.mark.parametrize("queue_id", sorted({q for f in definitions.FUNCTIONS for q in f.consumes}))
def test_consumed_queue_hides_a_batch_longer_than_its_consumers_run(
    synth: Synth, stateful_resources: dict[str, Any], queue_id: str,
) -> None:
    props = stateful_resources[_logical_id(synth, synth.stateful.queues[queue_id])]["Properties"]
    longest = max(f.timeout_s for f in definitions.FUNCTIONS if queue_id in f.consumes)
    # Lambda refuses an event source on a queue whose visibility timeout is below the function's.
    assert props["VisibilityTimeout"] >= 6 * longest
    assert props["VisibilityTimeout"] == delivery.visibility_timeout_s(queue_id)
    assert props["RedrivePolicy"]["maxReceiveCount"] == delivery.MAX_RECEIVE_COUNT


def test_exactly_one_custom_event_bus(stateful_resources: dict[str, Any]) -> None:
    assert len(of_type(stateful_resources, "AWS::Events::EventBus")) == 1


def test_user_pool_requires_totp_mfa_and_strong_passwords(stateful_resources: dict[str, Any]) -> None:
    (pool,) = of_type(stateful_resources, "AWS::Cognito::UserPool").values()
    props = pool["Properties"]
    assert props["MfaConfiguration"] == "ON"
    assert props["EnabledMfas"] == ["SOFTWARE_TOKEN_MFA"]
    assert props["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert "UsernameAttributes" not in props
    assert "AliasAttributes" not in props
    policy = props["Policies"]["PasswordPolicy"]
    assert policy["MinimumLength"] >= 12
    assert all(policy[k] for k in ("RequireLowercase", "RequireUppercase", "RequireNumbers", "RequireSymbols"))
    assert props["DeletionProtection"] == "ACTIVE"
    assert pool["DeletionPolicy"] == "Retain"


def test_user_pool_custom_attributes_are_the_defined_mutable_strings(stateful_resources: dict[str, Any]) -> None:
    (pool,) = of_type(stateful_resources, "AWS::Cognito::UserPool").values()
    custom = {a["Name"]: a for a in pool["Properties"]["Schema"] if "AttributeDataType" in a}
    assert set(custom) == set(definitions.USER_ATTRIBUTES)
    assert all(a["AttributeDataType"] == "String" and a["Mutable"] for a in custom.values())


def test_groups_are_the_roles(stateful_resources: dict[str, Any]) -> None:
    groups = {g["Properties"]["GroupName"] for g in of_type(stateful_resources, "AWS::Cognito::UserPoolGroup").values()}
    assert groups == set(definitions.ROLES)


def test_app_client_has_no_secret_and_cannot_write_tenant_attributes(stateful_resources: dict[str, Any]) -> None:
    (client,) = of_type(stateful_resources, "AWS::Cognito::UserPoolClient").values()
    props = client["Properties"]
    assert props["GenerateSecret"] is False
    assert {"ALLOW_USER_PASSWORD_AUTH", "ALLOW_USER_SRP_AUTH"} <= set(props["ExplicitAuthFlows"])
    # The tenant comes from these attributes (decision 3): a user must not be able to set them.
    assert not [a for a in props["WriteAttributes"] if a.startswith("custom:")]
    assert {f"custom:{a}" for a in definitions.USER_ATTRIBUTES} <= set(props["ReadAttributes"])


def test_trail_is_multi_region_validated_encrypted_and_records_data_events(synth: Synth) -> None:
    (trail,) = of_type(synth.stateful_template.to_json()["Resources"], "AWS::CloudTrail::Trail").values()
    props = trail["Properties"]
    assert props["IsMultiRegionTrail"] is True
    assert props["EnableLogFileValidation"] is True
    assert props["IncludeGlobalServiceEvents"] is True
    assert "KMSKeyId" in props
    assert "CloudWatchLogsLogGroupArn" in props
    assert "EventSelectors" not in props, "basic and advanced selectors cannot be mixed"
    selectors = {s["Name"]: s["FieldSelectors"] for s in props["AdvancedEventSelectors"]}
    assert any({"Field": "eventCategory", "Equals": ["Management"]} in f for f in selectors.values())
    by_type = {
        next(f["Equals"][0] for f in fields if f["Field"] == "resources.type"): fields
        for fields in selectors.values() if any(f["Field"] == "resources.type" for f in fields)
    }
    s3_arns = json.dumps(next(f for f in by_type["AWS::S3::Object"] if f["Field"] == "resources.ARN"))
    for logical_id in _bucket_ids(synth).values():
        assert logical_id in s3_arns
    table_arns = json.dumps(next(f for f in by_type["AWS::DynamoDB::Table"] if f["Field"] == "resources.ARN"))
    for logical_id in of_type(synth.stateful_template.to_json()["Resources"], "AWS::DynamoDB::Table"):
        assert logical_id in table_arns


def test_every_log_group_is_encrypted_and_expires(stateful_resources: dict[str, Any],
                                                  stateless_resources: dict[str, Any]) -> None:
    groups = {
        **of_type(stateful_resources, "AWS::Logs::LogGroup"),
        **of_type(stateless_resources, "AWS::Logs::LogGroup"),
    }
    assert groups
    # Cognito delivers its sign-in event log only to a log group without a KMS key (decision 0029).
    unkeyed = {sign_in_log_group_name("")}
    for logical_id, group in groups.items():
        if group["Properties"].get("LogGroupName") in unkeyed:
            assert "KmsKeyId" not in group["Properties"]
            assert group["Properties"]["RetentionInDays"] >= 5 * 365, logical_id  # audit evidence
            continue
        assert "KmsKeyId" in group["Properties"], logical_id
        assert group["Properties"]["RetentionInDays"] >= 365, logical_id
    assert unkeyed <= {g["Properties"].get("LogGroupName") for g in groups.values()}


@pytest.mark.parametrize("cfn_type", [
    "AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::KMS::Key", "AWS::Cognito::UserPool",
    "AWS::Logs::LogGroup", "AWS::Backup::BackupVault",
])
def test_stateful_resources_are_retained(stateful_resources: dict[str, Any], cfn_type: str) -> None:
    resources = of_type(stateful_resources, cfn_type)
    assert resources
    assert {r["DeletionPolicy"] for r in resources.values()} == {"Retain"}
