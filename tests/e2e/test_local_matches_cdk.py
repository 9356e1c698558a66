"""The local stack has the tables, indexes, queues, topics, event rules, schedules, event sources and
routes the synthesized CDK stacks declare."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from infra import definitions, delivery
from local.aws import describe_local_resources

pytestmark = pytest.mark.e2e


def _logical_prefix(definition_id: str) -> str:
    """As ``infra.naming.pascal`` (``hl7v2`` -> ``Hl7v2``), without importing CDK here."""
    return "".join(part[:1].upper() + part[1:] for part in definition_id.split("_"))


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    from aws_cdk.assertions import Template

    from infra.app import create_app
    from infra.build import build_all

    app = create_app(outdir=tmp_path_factory.mktemp("cdk.out"), build=build_all())
    app.synth()
    stateful = Template.from_stack(app.node.find_child("Expediente-Stateful")).to_json()["Resources"]
    stateless = Template.from_stack(app.node.find_child("Expediente-Stateless")).to_json()["Resources"]
    return stateful, stateless


def _by_prefix(resources: dict[str, Any], cfn_type: str, prefix: str) -> dict[str, Any]:
    matches = [r for name, r in resources.items() if r["Type"] == cfn_type and name.startswith(prefix)
               and not name.startswith(prefix + "Replica")]
    assert len(matches) == 1, f"{cfn_type} {prefix}: {len(matches)} matches"
    return matches[0]["Properties"]


def _logical_id(resources: dict[str, Any], cfn_type: str, prefix: str) -> str:
    (name,) = [name for name, r in resources.items() if r["Type"] == cfn_type and name.startswith(prefix)]
    return name


@pytest.fixture(scope="module")
def local_description(local_aws) -> dict[str, Any]:
    return describe_local_resources(local_aws)


def test_tables_and_indexes_match(local_aws, templates):
    stateful, _ = templates
    local = describe_local_resources(local_aws)["tables"]
    for table in definitions.TABLES:
        props = _by_prefix(stateful, "AWS::DynamoDB::Table", f"{_logical_prefix(table.id)}Table")
        keys = {k["KeyType"]: k["AttributeName"] for k in props["KeySchema"]}
        cdk = {
            "pk": keys["HASH"],
            "sk": keys.get("RANGE"),
            "indexes": {g["IndexName"]: {"pk": g["KeySchema"][0]["AttributeName"],
                                         "sk": g["KeySchema"][1]["AttributeName"]}
                        for g in props.get("GlobalSecondaryIndexes", [])},
            "ttl_attribute": (props.get("TimeToLiveSpecification") or {}).get("AttributeName"),
        }
        mine = local[table.id]
        assert {k: mine[k] for k in cdk} == cdk, table.id


def test_event_rules_match(local_description, templates):
    stateful, _ = templates
    local = local_description["rules"]
    for rule in definitions.RULES:
        props = _by_prefix(stateful, "AWS::Events::Rule", f"{_logical_prefix(rule.id)}Rule")
        pattern = props["EventPattern"]
        assert sorted(pattern["detail-type"]) == sorted(local[rule.id]["detail_types"])
        assert pattern["source"] == local[rule.id]["sources"]
        queues = sorted(q.id for q in definitions.QUEUES
                        if {"Fn::GetAtt": [_logical_id(stateful, "AWS::SQS::Queue", f"{_logical_prefix(q.id)}Queue"),
                                           "Arn"]} in [t["Arn"] for t in props["Targets"]])
        topics = sorted(t.id for t in definitions.TOPICS
                        if {"Ref": _logical_id(stateful, "AWS::SNS::Topic", f"{_logical_prefix(t.id)}Topic")}
                        in [target["Arn"] for target in props["Targets"]])
        assert len(props["Targets"]) == len(queues) + len(topics), rule.id
        assert queues == local[rule.id]["target_queues"], rule.id
        local_topics = sorted(t_id for t_id, t in local_description["topics"].items() if rule.id in t["rules"])
        assert topics == local_topics == sorted(rule.target_topics), rule.id


def test_topics_match(local_description, templates):
    stateful, _ = templates
    assert set(local_description["topics"]) == {t.id for t in definitions.TOPICS}
    for topic in definitions.TOPICS:
        assert "KmsMasterKeyId" in _by_prefix(stateful, "AWS::SNS::Topic", f"{_logical_prefix(topic.id)}Topic")


def test_queue_settings_match(local_description, templates):
    stateful, _ = templates
    local = local_description["queues"]
    for queue in definitions.QUEUES:
        props = _by_prefix(stateful, "AWS::SQS::Queue", f"{_logical_prefix(queue.id)}Queue")
        assert local[queue.id]["visibility_timeout_s"] == props.get("VisibilityTimeout", 30), queue.id
        assert local[queue.id]["max_receive_count"] == props["RedrivePolicy"]["maxReceiveCount"], queue.id


def test_schedules_match(local_description, templates):
    _, stateless = templates
    local = local_description["schedules"]
    assert set(local) == {s.id for s in definitions.SCHEDULES}
    for schedule in definitions.SCHEDULES:
        props = _by_prefix(stateless, "AWS::Events::Rule", f"{_logical_prefix(schedule.id)}Schedule")
        (target,) = props["Targets"]
        alias = _logical_id(stateless, "AWS::Lambda::Alias", f"{_logical_prefix(schedule.function)}FunctionAlias")
        assert target["Arn"] == {"Ref": alias}
        assert local[schedule.id] == {
            "function": schedule.function,
            "minutes": delivery.rate_minutes(props["ScheduleExpression"]),
            "bus": props.get("EventBusName", "default"),
        }


def test_event_sources_match(local_description, templates):
    stateful, stateless = templates
    deployed: dict[str, dict[str, Any]] = {}
    aliases = {f.id: _logical_id(stateless, "AWS::Lambda::Alias", f"{_logical_prefix(f.id)}FunctionAlias")
               for f in definitions.FUNCTIONS}
    queues = {q.id: _logical_id(stateful, "AWS::SQS::Queue", f"{_logical_prefix(q.id)}Queue")
              for q in definitions.QUEUES}
    for mapping in (r["Properties"] for r in stateless.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"):
        (function_id,) = [f_id for f_id, alias in aliases.items() if alias in json.dumps(mapping["FunctionName"])]
        (queue_id,) = [q_id for q_id, queue in queues.items() if queue in json.dumps(mapping["EventSourceArn"])]
        deployed.setdefault(function_id, {})[queue_id] = {
            "batch_size": mapping["BatchSize"],
            "report_batch_item_failures": mapping.get("FunctionResponseTypes") == ["ReportBatchItemFailures"],
        }
    assert deployed == local_description["event_sources"]
    assert deployed == {f.id: {q: {"batch_size": delivery.CONSUMER_BATCH_SIZE, "report_batch_item_failures": True}
                               for q in f.consumes} for f in definitions.FUNCTIONS if f.consumes}


def test_routes_match(local_aws, templates):
    _, stateless = templates
    parts = {name: r["Properties"] for name, r in stateless.items() if r["Type"] == "AWS::ApiGateway::Resource"}

    def path(name: str) -> str:
        parent = parts[name]["ParentId"]
        prefix = path(parent["Ref"]) if isinstance(parent, dict) and "Ref" in parent and parent["Ref"] in parts else ""
        return f"{prefix}/{parts[name]['PathPart']}"

    deployed = {path(name) for name in parts}
    local = describe_local_resources(local_aws)["routes"]
    local_paths = {p for routes in local.values() for kind in ("authorized", "public") for p in routes[kind]}
    assert local_paths <= deployed
    assert local_paths == {p for f in definitions.FUNCTIONS for p in (*f.routes, *f.public_routes)}
