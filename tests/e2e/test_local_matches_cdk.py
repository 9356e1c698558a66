"""The local stack has the tables, indexes, event rules and routes the synthesized CDK stacks declare."""

from __future__ import annotations

import os
from typing import Any

import pytest

from infra import definitions
from local.aws import describe_local_resources

pytestmark = pytest.mark.e2e


def _logical_prefix(definition_id: str) -> str:
    return "".join(part.title() for part in definition_id.split("_"))


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


def test_event_rules_match(local_aws, templates):
    stateful, _ = templates
    local = describe_local_resources(local_aws)["rules"]
    for rule in definitions.RULES:
        pattern = _by_prefix(stateful, "AWS::Events::Rule", f"{_logical_prefix(rule.id)}Rule")["EventPattern"]
        assert sorted(pattern["detail-type"]) == sorted(local[rule.id]["detail_types"])
        assert pattern["source"] == local[rule.id]["sources"]


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
