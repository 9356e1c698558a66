"""The CDK app: ``python -m infra.app`` from the repository root (``cdk synth`` runs the same).

Builds the Lambda assets (:func:`infra.build.build_all`), then the stacks
``[<stage>-]Expediente-Stateful`` and ``[<stage>-]Expediente-Stateless``, with the cdk-nag
AwsSolutions and HIPAA.Security packs as validation plugins: synthesis fails on any finding that
is not acknowledged with a reason.

Context: ``stage`` (optional) prefixes stack names and account-unique resource names, so several
stages can share one account. The feature flags in ``cdk.json`` apply whether the app is run by
the CDK CLI or directly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aws_cdk as cdk

from infra.build import REPO_ROOT, BuildPaths, build_all
from infra.nag import enable_checks
from infra.naming import stage_prefix
from infra.stacks.stateful import StatefulStack
from infra.stacks.stateless import StatelessStack

CDK_JSON = REPO_ROOT / "cdk.json"
DEFAULT_OUTDIR = REPO_ROOT / "cdk.out"


def cdk_json_context() -> dict[str, Any]:
    """The ``context`` of ``cdk.json`` (feature flags), or an empty dict without the file."""
    if not CDK_JSON.is_file():
        return {}
    context: dict[str, Any] = json.loads(CDK_JSON.read_text()).get("context", {})
    return context


def create_app(*, outdir: str | Path | None = None, context: dict[str, Any] | None = None,
               build: BuildPaths | None = None) -> cdk.App:
    """Build the assets (unless ``build`` is given) and define both stacks on a new App.

    ``context`` adds to or overrides ``cdk.json``'s context (e.g. ``{"stage": "dev"}``). Under the
    CDK CLI the output directory comes from the CLI; otherwise it is ``outdir`` or ``cdk.out``.
    Nothing is synthesized until ``app.synth()``.
    """
    merged = {**cdk_json_context(), **(context or {})}
    if "CDK_OUTDIR" in os.environ:  # run by the CDK CLI, which chooses the directory
        app = cdk.App(context=merged)
    else:
        app = cdk.App(outdir=str(outdir or DEFAULT_OUTDIR), context=merged)

    paths = build or build_all()
    stage = app.node.try_get_context("stage") or None
    prefix = stage_prefix(stage)
    env = cdk.Environment(
        account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION"),
    )
    stateful = StatefulStack(
        app, f"{prefix}Expediente-Stateful", name_prefix=prefix, build=paths, env=env,
        description="Expediente: keys, tables, buckets, identity, events, audit trail (all RETAIN)",
    )
    stateless = StatelessStack(
        app, f"{prefix}Expediente-Stateless", shared=stateful.resources, build=paths, name_prefix=prefix,
        env=env, description="Expediente: functions and REST API",
    )
    stateless.add_stack_dependency(stateful)
    for stack in (stateful, stateless):
        cdk.Tags.of(stack).add("application", "expediente")
        if stage:
            cdk.Tags.of(stack).add("stage", stage)
    enable_checks(app)
    return app


def main() -> None:
    create_app().synth()


if __name__ == "__main__":
    main()
