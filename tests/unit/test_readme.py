"""The README's NOM requirement table points at code and tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SECTION = README.split("## NOM-024-SSA3 and NOM-004-SSA3", 1)[1].split("\n## ", 1)[0]
ROWS = [line for line in SECTION.splitlines() if line.startswith("| ") and not line.startswith("| requirement")
        and not line.startswith("|---")]


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip("|").split(" | ")]


def test_the_table_covers_both_norms() -> None:
    assert sum(row.startswith("| NOM-024") for row in ROWS) >= 8
    assert sum(row.startswith("| NOM-004") for row in ROWS) >= 5


def test_every_code_path_exists() -> None:
    missing = [path for row in ROWS for path in re.findall(r"`([\w./-]+)`", _cells(row)[2])
               if not (ROOT / path).exists()]
    assert missing == []


def test_every_named_test_exists() -> None:
    missing = []
    for row in ROWS:
        current: Path | None = None
        for reference in re.findall(r"`([^`]+)`", _cells(row)[3]):
            path, _, name = reference.partition("::")
            if path:
                current = ROOT / path
            if current is None or not current.exists():
                missing.append(reference)
                continue
            if name and not re.search(rf"^def {re.escape(name)}\(", current.read_text(encoding="utf-8"), re.M):
                missing.append(reference)
    assert missing == []
