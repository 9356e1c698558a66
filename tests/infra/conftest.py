"""Synthesize the CDK app once per test session and share the result.

The build step reuses ``build/`` (the layer install is skipped while its stamp matches
``uv.lock``); on a fresh checkout it installs the layer, which needs uv and PyPI.
Synthesis runs both cdk-nag packs: if it fails, every test here fails with the findings listed.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk.assertions import Template

from infra.app import create_app
from infra.build import BuildPaths, build_all
from infra.stacks.stateful import StatefulStack
from infra.stacks.stateless import StatelessStack
from tests.infra.synth_support import Synth, findings


@pytest.fixture(scope="session")
def build_paths() -> BuildPaths:
    return build_all()


@pytest.fixture(scope="session")
def synth(build_paths: BuildPaths, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = create_app(outdir=outdir, build=build_paths)
    try:
        app.synth()
    except RuntimeError as exc:
        listed = "\n".join(findings(outdir / "validation-report.json"))
        pytest.fail(f"synthesis failed: {exc}\n{listed}")
    stateful = app.node.find_child("Expediente-Stateful")
    stateless = app.node.find_child("Expediente-Stateless")
    assert isinstance(stateful, StatefulStack)
    assert isinstance(stateless, StatelessStack)
    return Synth(
        app=app,
        stateful=stateful,
        stateless=stateless,
        stateful_template=Template.from_stack(stateful),
        stateless_template=Template.from_stack(stateless),
        outdir=outdir,
    )


@pytest.fixture(scope="session")
def stateful_resources(synth: Synth) -> dict[str, Any]:
    return synth.stateful_template.to_json()["Resources"]


@pytest.fixture(scope="session")
def stateless_resources(synth: Synth) -> dict[str, Any]:
    return synth.stateless_template.to_json()["Resources"]
