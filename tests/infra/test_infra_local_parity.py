"""The local stack (``local/``) provisions what the CDK stacks declare (decision 0001).

Both are built from ``infra.definitions``; this compares what each actually produces: the local
side read back from the embedded AWS (``local.aws.describe_local_resources``), the CDK side read
from the synthesized templates, in the same normalized shape.

The embedded AWS runs in a child process: moto keeps one state per process and starting it
resets that state, which would wipe an e2e stack running in the same test worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra import definitions, delivery
from infra.naming import table_name
from tests.infra.synth_support import Synth, of_type

pytestmark = pytest.mark.infra

REPO_ROOT = Path(__file__).resolve().parents[2]

# Known, documented differences (local/README.md): demo users log in without TOTP locally.
LOCAL_ONLY = {("user_pool", "mfa")}

_DESCRIBE_LOCAL = """
import json
from local.aws import EmbeddedAws, describe_local_resources, provision
aws = EmbeddedAws(port=0)
try:
    print(json.dumps(describe_local_resources(provision(aws.start()))))
finally:
    aws.stop()
"""


@pytest.fixture(scope="module")
def local_description() -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _DESCRIBE_LOCAL], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
        env={**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'layers' / 'common'}:{REPO_ROOT}"}, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cdk_description(synth: Synth) -> dict[str, Any]:
    stateful = synth.stateful
    resources = synth.stateful_template.to_json()["Resources"]
    ids_by_name = {table_name("", t.id): t.id for t in definitions.TABLES}

    tables = {}
    for table in of_type(resources, "AWS::DynamoDB::Table").values():
        props = table["Properties"]
        keys = {k["KeyType"]: k["AttributeName"] for k in props["KeySchema"]}
        indexes = {}
        for index in props.get("GlobalSecondaryIndexes", []):
            index_keys = {k["KeyType"]: k["AttributeName"] for k in index["KeySchema"]}
            indexes[index["IndexName"]] = {"pk": index_keys["HASH"], "sk": index_keys.get("RANGE")}
        ttl = props.get("TimeToLiveSpecification", {})
        tables[ids_by_name[props["TableName"]]] = {
            "pk": keys["HASH"], "sk": keys.get("RANGE"), "indexes": indexes,
            "ttl_attribute": ttl.get("AttributeName") if ttl.get("Enabled") else None,
        }

    queues = stateful.queues
    queue_ids = {stateful.get_logical_id(q.node.default_child): q_id for q_id, q in queues.items()}

    buckets = {}
    for bucket_id, bucket in stateful.buckets.items():
        props = resources[stateful.get_logical_id(bucket.node.default_child)]["Properties"]
        notifications: dict[str, list[str]] = {}
        for config in props.get("NotificationConfiguration", {}).get("QueueConfigurations", []):
            notifications.setdefault(queue_ids[config["Queue"]["Fn::GetAtt"][0]], []).append(config["Event"])
        buckets[bucket_id] = {
            "versioned": props.get("VersioningConfiguration", {}).get("Status") == "Enabled",
            "object_lock": props.get("ObjectLockConfiguration", {}).get("Rule", {}).get("DefaultRetention", {})
            .get("Mode"),
            "notifications": {k: sorted(v) for k, v in notifications.items()},
        }

    # The alarm topic is deployed only (CloudWatch alarms; documented local difference).
    topic_ids = {stateful.get_logical_id(t.node.default_child): t_id for t_id, t in stateful.topics.items()}
    alarm_topic = stateful.get_logical_id(stateful.alarm_topic.node.default_child)
    topics: dict[str, dict[str, list[str]]] = {
        topic_ids.get(logical_id, logical_id): {"rules": []}
        for logical_id in of_type(resources, "AWS::SNS::Topic") if logical_id != alarm_topic
    }

    rules = {}
    for rule_id, rule in stateful.rules.items():
        props = resources[stateful.get_logical_id(rule.node.default_child)]["Properties"]
        rules[rule_id] = {
            "sources": sorted(props["EventPattern"]["source"]),
            "detail_types": sorted(props["EventPattern"]["detail-type"]),
            "target_queues": sorted(queue_ids[t["Arn"]["Fn::GetAtt"][0]] for t in props["Targets"]
                                    if "Fn::GetAtt" in t["Arn"]),
        }
        for target in props["Targets"]:
            if "Ref" in target["Arn"]:
                topics[topic_ids[target["Arn"]["Ref"]]]["rules"].append(rule_id)
    for topic in topics.values():
        topic["rules"].sort()

    (pool,) = of_type(resources, "AWS::Cognito::UserPool").values()
    (client,) = of_type(resources, "AWS::Cognito::UserPoolClient").values()
    groups = of_type(resources, "AWS::Cognito::UserPoolGroup").values()
    schema = pool["Properties"]["Schema"]
    user_pool = {
        "groups": sorted(g["Properties"]["GroupName"] for g in groups),
        "custom_attributes": sorted(f"custom:{a['Name']}" for a in schema if "AttributeDataType" in a),
        "mfa": pool["Properties"]["MfaConfiguration"],
        "client_auth_flows": sorted(client["Properties"]["ExplicitAuthFlows"]),
        "client_has_secret": client["Properties"]["GenerateSecret"],
    }

    queues = {}
    for logical_id, q_id in queue_ids.items():
        props = resources[logical_id]["Properties"]
        queues[q_id] = {
            "dlq": "RedrivePolicy" in props,
            "max_receive_count": props.get("RedrivePolicy", {}).get("maxReceiveCount", 0),
            "visibility_timeout_s": props.get("VisibilityTimeout", 30),  # SQS's default
        }

    return {
        "tables": tables,
        "buckets": buckets,
        "queues": queues,
        "topics": topics,
        "rules": rules,
        "schedules": _cdk_schedules(synth),
        "event_sources": _cdk_event_sources(synth),
        "routes": _cdk_routes(synth),
        "user_pool": user_pool,
    }


def _alias_owners(synth: Synth) -> dict[str, str]:
    """Logical id of each function's alias -> function id."""
    return {synth.stateless.get_logical_id(fn.alias.node.default_child): f_id
            for f_id, fn in synth.stateless.functions.items()}


def _cdk_schedules(synth: Synth) -> dict[str, dict[str, Any]]:
    """Every scheduled rule of both stacks, by ``ScheduleDef`` id (logical id if it has none)."""
    owners = _alias_owners(synth)
    schedule_ids = {synth.stateless.get_logical_id(r.node.default_child): s_id
                    for s_id, r in synth.stateless.schedules.items()}
    schedules = {}
    for template in (synth.stateful_template, synth.stateless_template):
        for logical_id, rule in of_type(template.to_json()["Resources"], "AWS::Events::Rule").items():
            props = rule["Properties"]
            if "ScheduleExpression" not in props:
                continue
            (target,) = props["Targets"]
            schedules[schedule_ids.get(logical_id, logical_id)] = {
                "function": owners.get(target["Arn"].get("Ref", ""), json.dumps(target["Arn"])),
                "minutes": delivery.rate_minutes(props["ScheduleExpression"]),
                "bus": "default" if "EventBusName" not in props else json.dumps(props["EventBusName"]),
            }
    return schedules


def _cdk_event_sources(synth: Synth) -> dict[str, dict[str, dict[str, Any]]]:
    owners = _alias_owners(synth)
    queues = {synth.stateful.get_logical_id(q.node.default_child): q_id for q_id, q in synth.stateful.queues.items()}
    resources = synth.stateless_template.to_json()["Resources"]
    sources: dict[str, dict[str, dict[str, Any]]] = {}
    for mapping in of_type(resources, "AWS::Lambda::EventSourceMapping").values():
        props = mapping["Properties"]
        function = json.dumps(props["FunctionName"])
        source = json.dumps(props["EventSourceArn"])
        (function_id,) = [f_id for alias_id, f_id in owners.items() if alias_id in function] or [function]
        (queue_id,) = [q_id for logical_id, q_id in queues.items() if logical_id in source] or [source]
        sources.setdefault(function_id, {})[queue_id] = {
            "batch_size": props["BatchSize"],
            "report_batch_item_failures": "ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
        }
    return sources


def _cdk_routes(synth: Synth) -> dict[str, dict[str, list[str]]]:
    resources = synth.stateless_template.to_json()["Resources"]
    parts = {k: (v["Properties"]["ParentId"], v["Properties"]["PathPart"])
             for k, v in of_type(resources, "AWS::ApiGateway::Resource").items()}

    def path(ref: dict[str, Any]) -> str:
        if "Ref" not in ref:
            return ""
        parent, part = parts[ref["Ref"]]
        return f"{path(parent)}/{part}"

    alias_owner = _alias_owners(synth)
    routes: dict[str, dict[str, list[str]]] = {}
    for method in of_type(resources, "AWS::ApiGateway::Method").values():
        props = method["Properties"]
        uri = json.dumps(props["Integration"]["Uri"])
        owner = next(f_id for alias_id, f_id in alias_owner.items() if alias_id in uri)
        entry = routes.setdefault(owner, {"authorized": [], "public": []})
        entry["public" if props["AuthorizationType"] == "NONE" else "authorized"].append(path(props["ResourceId"]))
    for entry in routes.values():
        entry["authorized"].sort()
        entry["public"].sort()
    return routes


SECTIONS = ["tables", "buckets", "queues", "topics", "rules", "schedules", "event_sources", "routes", "user_pool"]


@pytest.mark.parametrize("section", SECTIONS)
def test_local_stack_provisions_what_the_cdk_stacks_declare(
    synth: Synth, local_description: dict[str, Any], section: str,
) -> None:
    local, deployed = local_description[section], _cdk_description(synth)[section]
    for skipped_section, key in LOCAL_ONLY:
        if skipped_section == section:
            local, deployed = dict(local), dict(deployed)
            local.pop(key, None)
            deployed.pop(key, None)
    assert local == deployed


def test_the_compared_sections_are_not_empty(synth: Synth, local_description: dict[str, Any]) -> None:
    """A section that is empty on both sides would compare equal and prove nothing."""
    deployed = _cdk_description(synth)
    for section in SECTIONS:
        assert deployed[section], section
    assert set(deployed["topics"]) == {t.id for t in definitions.TOPICS}
    assert set(deployed["schedules"]) == {s.id for s in definitions.SCHEDULES}
    assert {(f, q) for f, queues in deployed["event_sources"].items() for q in queues} == {
        (f.id, q) for f in definitions.FUNCTIONS for q in f.consumes}
    assert deployed["topics"]["critical_notifications"]["rules"] == ["critical_results"]


def test_deployed_pool_requires_mfa_where_the_local_one_does_not(synth: Synth,
                                                                 local_description: dict[str, Any]) -> None:
    assert _cdk_description(synth)["user_pool"]["mfa"] == "ON"
    assert local_description["user_pool"]["mfa"] == "OFF"
