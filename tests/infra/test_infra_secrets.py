"""No secret in the synthesized CloudFormation templates (issue 7, item 7).

The repository scan is ``tests/unit/test_secrets.py``; the templates need the synthesized app, which
this tier builds once per session (``tests/infra/conftest.py``), so the check always runs here.
"""

from __future__ import annotations

import pytest

from tests.infra.synth_support import Synth
from tests.unit.test_secrets import template_findings

pytestmark = pytest.mark.infra


def test_no_secret_in_the_synthesized_templates(synth: Synth) -> None:
    templates = synth.template_files()
    assert len(templates) >= 2  # the stateful and the stateless stack
    assert [f for t in templates for f in template_findings(t)] == []
