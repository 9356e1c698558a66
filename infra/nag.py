"""cdk-nag 3 wiring and the one way this app acknowledges a finding.

cdk-nag 3 runs as a CDK policy-validation plugin: synthesis fails on any finding that has not
been acknowledged, and the report lands in ``<outdir>/validation-report.json``.
An acknowledgment is recorded on the narrowest construct that carries the finding, and each one
states why the finding does not apply or is accepted; :func:`acknowledge` refuses an empty reason.
"""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks
from constructs import IConstruct

# HIPAA.Security-IAMNoInlinePolicy fires on every policy that CDK's grant_* methods produce.
INLINE_POLICY_REASON = (
    "CDK grants write one AWS::IAM::Policy attached to exactly one role and scoped to named "
    "resources; a customer-managed policy would only add a detachable copy of the same statements."
)


def enable_checks(app: cdk.App) -> None:
    """Run the AwsSolutions and HIPAA.Security packs on every stack of ``app`` at synth."""
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), HIPAASecurityChecks(app))


# Rule-id prefix -> the plugin name CDK expects before "::" in an acknowledgment id. Without it
# CDK files the id under "Annotation::", which cdk-nag happens to accept but reads as a CDK warning.
_PACKS = {"AwsSolutions-": "AwsSolutions", "HIPAA.Security-": "HIPAA.Security"}


def acknowledge(scope: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge finding ``rule_id`` (e.g. ``AwsSolutions-IAM5[Resource::*]``) on ``scope``.

    cdk-nag rule ids are qualified with their pack (``AwsSolutions::AwsSolutions-IAM5[...]``);
    other ids (``Annotation::...``) are used as given. Raises ValueError when ``reason`` is blank:
    an acknowledgment must say why.
    """
    if not reason.strip():
        raise ValueError(f"acknowledgment of {rule_id} needs a reason")
    qualified = next(
        (f"{pack}::{rule_id}" for prefix, pack in _PACKS.items() if rule_id.startswith(prefix)), rule_id
    )
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=qualified, reason=reason))


def rendered(scope: IConstruct, value: str) -> str:
    """``value`` as cdk-nag writes it inside a finding id, e.g. ``IAM5[Resource::<this>]``.

    Tokens are resolved in ``scope``'s stack, so the result follows the stack's environment:
    ``arn:<AWS::Partition>:...:<AWS::AccountId>:...`` when it is unknown, literals when it is set.
    Only stack-local values render stably; a cross-stack reference renders as its import.
    """
    return _flatten(cdk.Stack.of(scope).resolve(value))


def _flatten(value: Any) -> str:
    # Mirrors cdk-nag's flattening of CloudFormation references in finding ids.
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (function, argument), = value.items()
        if function == "Fn::Join":
            separator, parts = argument
            return str(separator).join(_flatten(part) for part in parts)
        if function == "Ref":
            return f"<{argument}>"
        if function == "Fn::GetAtt":
            return f"<{argument[0]}.{argument[1]}>"
    return json.dumps(value, separators=(",", ":"))
