"""Sign-in audit in the templates (decision 0029): the user pool's triggers, threat protection, the
sign-in event log and its subscription by the admin function."""

from __future__ import annotations

from typing import Any

import pytest

from infra import definitions
from infra.naming import sign_in_log_group_name
from tests.infra.synth_support import Synth, of_type

pytestmark = pytest.mark.infra


def _one(resources: dict[str, Any], cfn_type: str) -> tuple[str, dict[str, Any]]:
    found = of_type(resources, cfn_type)
    assert len(found) == 1, (cfn_type, sorted(found))
    return next(iter(found.items()))


def _logical_id(synth: Synth, construct: Any, *, stateful: bool = True) -> str:
    stack = synth.stateful if stateful else synth.stateless
    return stack.get_logical_id(construct.node.default_child)


def test_the_pool_calls_the_sign_in_function_before_and_after_every_authentication(synth: Synth,
                                                                                 stateful_resources: dict[str, Any]):
    _, pool = _one(stateful_resources, "AWS::Cognito::UserPool")
    alias = _logical_id(synth, synth.stateful.sign_in.alias)
    assert pool["Properties"]["LambdaConfig"] == {"PreAuthentication": {"Ref": alias},
                                                  "PostAuthentication": {"Ref": alias}}
    function = stateful_resources[_logical_id(synth, synth.stateful.sign_in.function)]["Properties"]
    assert function["Handler"] == "functions.sign_in.handler.lambda_handler"
    assert function["Timeout"] <= 5  # Cognito waits five seconds for a trigger
    assert "USER_POOL_ID" not in function["Environment"]["Variables"]  # no reference back to its own pool
    permissions = [p["Properties"] for p in of_type(stateful_resources, "AWS::Lambda::Permission").values()
                   if p["Properties"]["Principal"] == "cognito-idp.amazonaws.com"]
    pool_id = _logical_id(synth, synth.stateful.user_pool)
    assert len(permissions) == 2
    assert all(p["FunctionName"] == {"Ref": alias} and p["SourceArn"] == {"Fn::GetAtt": [pool_id, "Arn"]}
               for p in permissions)


def test_the_sign_in_function_writes_only_the_audit_table(synth: Synth):
    assert definitions.SIGN_IN.writes == ("audit",) and not definitions.SIGN_IN.reads
    assert not (definitions.SIGN_IN.routes or definitions.SIGN_IN.cognito_admin or definitions.SIGN_IN.buckets_write)
    assert definitions.SIGN_IN.id not in {f.id for f in definitions.FUNCTIONS}  # never in the stateless stack
    assert "SignIn" not in "".join(synth.stateless.functions)


def test_threat_protection_is_on_and_blocks_leaked_credentials_and_high_risk(stateful_resources: dict[str, Any]):
    _, pool = _one(stateful_resources, "AWS::Cognito::UserPool")
    assert pool["Properties"]["UserPoolTier"] == "PLUS"
    assert pool["Properties"]["UserPoolAddOns"] == {"AdvancedSecurityMode": "ENFORCED"}
    _, risk = _one(stateful_resources, "AWS::Cognito::UserPoolRiskConfigurationAttachment")
    props = risk["Properties"]
    assert props["ClientId"] == "ALL"
    assert props["CompromisedCredentialsRiskConfiguration"]["Actions"] == {"EventAction": "BLOCK"}
    assert "SIGN_IN" in props["CompromisedCredentialsRiskConfiguration"]["EventFilter"]
    actions = props["AccountTakeoverRiskConfiguration"]["Actions"]
    assert actions["HighAction"]["EventAction"] == "BLOCK" and actions["MediumAction"]["EventAction"] == "MFA_REQUIRED"


def test_the_pool_exports_its_sign_in_events_to_the_retained_log_group(stateful_resources: dict[str, Any]):
    group_id, group = next((k, v) for k, v in of_type(stateful_resources, "AWS::Logs::LogGroup").items()
                           if v["Properties"].get("LogGroupName") == sign_in_log_group_name(""))
    assert group["DeletionPolicy"] == "Retain" and group["Properties"]["RetentionInDays"] >= 5 * 365
    _, delivery = _one(stateful_resources, "AWS::Cognito::LogDeliveryConfiguration")
    (config,) = delivery["Properties"]["LogConfigurations"]
    assert config["EventSource"] == "userAuthEvents" and config["LogLevel"] == "INFO"
    separator, parts = config["CloudWatchLogsConfiguration"]["LogGroupArn"]["Fn::Join"]
    arn = separator.join(p if isinstance(p, str) else "<>" for p in parts)
    # Cognito's ARN pattern has no room for the ":*" that LogGroup.log_group_arn ends with.
    assert arn.endswith(f":log-group:{sign_in_log_group_name('')}") and "*" not in arn
    assert group_id in delivery.get("DependsOn", [])


def test_the_admin_function_receives_every_sign_in_event(synth: Synth, stateless_resources: dict[str, Any]):
    _, subscription = _one(stateless_resources, "AWS::Logs::SubscriptionFilter")
    admin_alias = _logical_id(synth, synth.stateless.functions[definitions.SIGN_IN_FAILURES_FUNCTION].alias,
                              stateful=False)
    assert subscription["Properties"]["LogGroupName"] == sign_in_log_group_name("")
    assert subscription["Properties"]["DestinationArn"] == {"Ref": admin_alias}
    assert subscription["Properties"]["FilterPattern"] == ""  # unreadable events are counted, not filtered out
    invoke = [p["Properties"] for p in of_type(stateless_resources, "AWS::Lambda::Permission").values()
              if p["Properties"]["Principal"] == "logs.amazonaws.com"]
    assert len(invoke) == 1 and invoke[0]["FunctionName"] == {"Ref": admin_alias}
    # The function that reads the user's account to find the tenant may call AdminGetUser on the pool.
    assert definitions.function(definitions.SIGN_IN_FAILURES_FUNCTION).cognito_admin


def test_unreadable_sign_in_events_raise_an_alarm(stateless_resources: dict[str, Any]):
    alarms = [a["Properties"] for a in of_type(stateless_resources, "AWS::CloudWatch::Alarm").values()
              if a["Properties"].get("MetricName") == "SignInEventsUnreadable"]
    assert len(alarms) == 1
    service = {"Name": "service", "Value": f"expediente-{definitions.SIGN_IN_FAILURES_FUNCTION}"}
    assert service in alarms[0]["Dimensions"]
