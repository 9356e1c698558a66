"""The docs cannot rot: every ``bash run`` block of ``docs/guides`` and the README runs, in order, against the
local stack.

A guide's blocks are one bash script (``set -euo pipefail``: any failing command, including a
``test`` of an expected status, fails the guide), run from the repository root with ``API`` set to
the stack's URL and ``EXPEDIENTE_STACK_FILE`` to its stack file, as a developer's shell after
``make run`` would have them. Blocks that cannot run locally must say so in their info string
(``bash deployed``); any other ``bash`` block is refused, so no example escapes the test. The one
exception is the README's quick start, the two commands CI itself runs (``make run``, ``make test``).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
GUIDES = [*sorted((ROOT / "docs" / "guides").glob("*.md")), ROOT / "README.md"]
QUICK_START = ("make run", "make test")
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(path: Path) -> list[tuple[str, str]]:
    return [(m["info"].strip(), m["body"]) for m in FENCE.finditer(path.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_every_shell_example_is_run_or_says_why_not(guide: Path) -> None:
    shell = [(info, body) for info, body in blocks(guide) if info.split(" ")[0] in ("bash", "sh", "shell", "console")]
    assert any(info == "bash run" for info, _ in shell), f"{guide.name} has no example that runs"
    others = [body for info, body in shell if info not in ("bash run", "bash deployed")]
    if guide.name == "README.md":
        assert [[line.split("#")[0].strip() for line in body.splitlines()] for body in others] == [list(QUICK_START)]
        assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    else:
        assert others == []


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_the_guide_runs_against_the_local_stack(guide: Path, local_stack, tmp_path: Path) -> None:
    script = "set -euo pipefail\n" + "\n".join(body for info, body in blocks(guide) if info == "bash run")
    env = {**os.environ, "API": local_stack.api_url, "EXPEDIENTE_STACK_FILE": str(local_stack.stack_file)}
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(ROOT / ".venv")
    for name in ("local", "layers", "functions", "infra", "ops", "docs"):
        (work / name).symlink_to(ROOT / name)
    result = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, f"{guide.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
