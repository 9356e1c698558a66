"""cdk-nag, acknowledgments and cfn-lint over the synthesized templates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_
from cfnlint.api import ManualArgs, lint_file

from infra import definitions
from infra.app import cdk_json_context, create_app
from infra.build import BuildPaths
from infra.constructs.function import ExpedienteFunction
from infra.nag import acknowledge, enable_checks
from infra.stacks.stateful import StatefulStack
from tests.infra.synth_support import Synth, findings

pytestmark = pytest.mark.infra

ACK_METADATA = "aws:cdk:acknowledged-rules"


def _acknowledgments(outdir: Path) -> list[tuple[str, str, str]]:
    """(construct path, rule id, reason) for every acknowledgment in the assembly's metadata."""
    acks = []
    for metadata_file in outdir.glob("*.metadata.json"):
        for path, entries in json.loads(metadata_file.read_text()).items():
            for entry in entries:
                if entry["type"] == ACK_METADATA:
                    acks.extend((path, rule, reason) for rule, reason in entry["data"].items())
    return acks


def test_cdk_nag_reports_no_unacknowledged_finding(synth: Synth) -> None:
    report = json.loads((synth.outdir / "validation-report.json").read_text())
    plugins = {p["pluginName"]: p for p in report["pluginReports"]}
    assert {"AwsSolutions", "HIPAA.Security"} <= set(plugins), "both packs must have run"
    assert findings(synth.outdir / "validation-report.json") == []
    assert all(p["conclusion"] == "success" for p in plugins.values())


def test_every_acknowledgment_says_why(synth: Synth) -> None:
    acks = _acknowledgments(synth.outdir)
    assert acks, "acknowledgments are recorded in the assembly metadata"
    for path, rule, reason in acks:
        assert len(reason.strip()) >= 30, f"{rule} at {path} needs a real reason"
        assert "::" in rule, f"{rule} at {path} should name its pack or source"


def test_no_acknowledgment_is_made_for_a_whole_stack(synth: Synth) -> None:
    stack_paths = {f"/{synth.stateful.stack_name}", f"/{synth.stateless.stack_name}"}
    assert not [a for a in _acknowledgments(synth.outdir) if a[0] in stack_paths]


def test_acknowledge_refuses_a_blank_reason() -> None:
    scope = cdk.Stack(cdk.App(), "Scratch")
    with pytest.raises(ValueError, match="needs a reason"):
        acknowledge(scope, "AwsSolutions-IAM5", "  ")


def test_cfn_lint_passes_on_every_template(synth: Synth) -> None:
    templates = synth.template_files()
    assert len(templates) == 2
    # mx-central-1: see the concrete-environment test
    for template in templates:
        matches = lint_file(template, ManualArgs(ignore_checks=["W3005"]))
        assert [str(m) for m in matches] == [], template.name


def test_a_function_using_every_capability_passes_cdk_nag(build_paths: BuildPaths, tmp_path: Path) -> None:
    """The function construct acknowledges what every declared capability brings, nothing more."""
    everything = definitions.FunctionDef(
        id="everything",
        description="test function that declares every capability",
        writes=tuple(t.id for t in definitions.TABLES[:2]),
        reads=tuple(t.id for t in definitions.TABLES[2:]),
        buckets_write=tuple(b.id for b in definitions.BUCKETS),
        puts_events=True,
        cognito_admin=True,
        consumes=tuple(q.id for q in definitions.QUEUES),
    )
    app = cdk.App(outdir=str(tmp_path), context=cdk_json_context())
    stateful = StatefulStack(app, "Capabilities-Stateful", build=build_paths)
    stack = cdk.Stack(app, "Capabilities-Function")
    layer = lambda_.LayerVersion(stack, "Layer", code=lambda_.Code.from_asset(str(build_paths.layer)))
    ExpedienteFunction(stack, "Everything", definition=everything,
                       code=next(iter(build_paths.functions.values())), layer=layer,
                       shared=stateful.resources)
    enable_checks(app)
    try:
        app.synth()
    except RuntimeError as exc:
        listed = "\n".join(findings(tmp_path / "validation-report.json"))
        pytest.fail(f"{exc}\n{listed}")


def test_stage_context_prefixes_stack_and_resource_names(build_paths: BuildPaths, tmp_path: Path) -> None:
    app = create_app(outdir=tmp_path, context={"stage": "qa"}, build=build_paths)
    names = {c.node.id for c in app.node.children if isinstance(c, cdk.Stack)}
    assert names == {"qa-Expediente-Stateful", "qa-Expediente-Stateless"}
    stateful: Any = app.node.find_child("qa-Expediente-Stateful")
    assert stateful.resources.table_names["patients"] == "qa-expediente-patients"


def test_app_passes_cdk_nag_in_a_concrete_environment(build_paths: BuildPaths, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A deploy knows account and region, which turns ARNs in finding ids into literals."""
    monkeypatch.setenv("CDK_DEFAULT_ACCOUNT", "123456789012")
    monkeypatch.setenv("CDK_DEFAULT_REGION", "mx-central-1")  # AWS Mexico (Central)
    app = create_app(outdir=tmp_path, build=build_paths)
    try:
        app.synth()
    except RuntimeError as exc:
        listed = "\n".join(findings(tmp_path / "validation-report.json"))
        pytest.fail(f"{exc}\n{listed}")
    for template in sorted(tmp_path.glob("*.template.json")):
        matches = lint_file(template, ManualArgs(ignore_checks=["W3005"], regions=["mx-central-1"]))
        assert [str(m) for m in matches] == [], template.name


def test_every_acknowledgment_matches_a_finding_and_every_finding_is_acknowledged(
    build_paths: BuildPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Synthesize with acknowledgments recorded instead of applied, then pair them with findings.

    Keeps acknowledgments honest: none left over after the finding it covered went away, and
    each sits on the construct (or an ancestor of the construct) that carries the finding.
    """
    import infra.constructs.function
    import infra.stacks.stateful
    import infra.stacks.stateless

    recorded: list[tuple[str, str]] = []
    for module in (infra.stacks.stateful, infra.constructs.function, infra.stacks.stateless):
        monkeypatch.setattr(module, "acknowledge", lambda scope, rule, reason: recorded.append((rule, scope.node.path)))
    app = create_app(outdir=tmp_path, build=build_paths)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    found = [
        (violation["ruleName"], construct["constructPath"])
        for plugin in report["pluginReports"]
        for violation in plugin["violations"]
        for construct in violation["violatingConstructs"]
    ]

    def covers(ack: tuple[str, str], finding: tuple[str, str]) -> bool:
        return ack[0] == finding[0] and (finding[1] == ack[1] or finding[1].startswith(ack[1] + "/"))

    assert [a for a in recorded if not any(covers(a, f) for f in found)] == [], "acknowledged, never found"
    assert [f for f in found if not any(covers(a, f) for a in recorded)] == [], "found, never acknowledged"
