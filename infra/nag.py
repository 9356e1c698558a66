"""cdk-nag 3 wiring and the one way this app acknowledges a finding.

cdk-nag 3 runs as a CDK policy-validation plugin: synthesis fails on any finding that has not
been acknowledged, and the report lands in ``<outdir>/policy-validation-report.json``.
An acknowledgment is recorded on the narrowest construct that carries the finding, and each one
states why the finding does not apply or is accepted; :func:`acknowledge` refuses an empty reason.
"""

from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks
from constructs import IConstruct


def enable_checks(app: cdk.App) -> None:
    """Run the AwsSolutions and HIPAA.Security packs on every stack of ``app`` at synth."""
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), HIPAASecurityChecks(app))


def acknowledge(scope: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge finding ``rule_id`` (e.g. ``AwsSolutions-IAM5[Resource::*]``) on ``scope``.

    Raises ValueError when ``reason`` is blank: an acknowledgment must say why.
    """
    if not reason.strip():
        raise ValueError(f"acknowledgment of {rule_id} needs a reason")
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=rule_id, reason=reason))
