"""Shared helpers for the infra tests: the synthesized app and template queries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk.assertions import Template

from infra.stacks.stateful import StatefulStack
from infra.stacks.stateless import StatelessStack


@dataclass(frozen=True)
class Synth:
    """One synthesized app: the stacks, their templates and the cloud assembly directory."""

    app: cdk.App
    stateful: StatefulStack
    stateless: StatelessStack
    stateful_template: Template
    stateless_template: Template
    outdir: Path

    def template_files(self) -> list[Path]:
        return sorted(self.outdir.glob("*.template.json"))


def of_type(resources: dict[str, Any], cfn_type: str) -> dict[str, Any]:
    """The resources of one CloudFormation type, by logical id."""
    return {k: v for k, v in resources.items() if v["Type"] == cfn_type}


def findings(report_file: Path) -> list[str]:
    """``rule at construct path`` for every violation in a CDK policy-validation report."""
    if not report_file.is_file():
        return []
    report = json.loads(report_file.read_text())
    return [
        f"{violation['ruleName']} at {construct['constructPath']}"
        for plugin in report.get("pluginReports", [])
        for violation in plugin.get("violations", [])
        for construct in violation.get("violatingConstructs", [])
    ]
