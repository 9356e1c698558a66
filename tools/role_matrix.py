"""Render the permission table into the README: ``python -m tools.role_matrix [--write | --check]``.

The table is ``layers/common/expediente/permissions.py`` (``PERMISSIONS``, ``NARRATIVE_READERS``,
``SENSITIVE_DIAGNOSIS_READERS``), the single source of truth the handlers enforce. This tool writes it
as Markdown between ``<!-- role-matrix:start -->`` and ``<!-- role-matrix:end -->`` in ``README.md``:
one row per resource type, one column per role, each cell listing the interactions that role may
perform ("reads" stands for read, vread, history and search together). Without an option it prints the
block; ``--write`` replaces the block in the README; ``--check`` exits 1 when the README's block differs
from the table (``tests/unit/test_role_matrix_doc.py`` runs it in CI).
``tests/integration/security/test_role_matrix.py`` proves every cell against the running handlers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START = "<!-- role-matrix:start -->"
END = "<!-- role-matrix:end -->"


def _imports() -> tuple[object, object, object, object, object]:
    sys.path.insert(0, str(ROOT / "layers" / "common"))
    from expediente import permissions

    return (permissions.PERMISSIONS, permissions.Role, permissions.Interaction, permissions.NARRATIVE_READERS,
            getattr(permissions, "SENSITIVE_DIAGNOSIS_READERS", frozenset()))


def cell(granted: frozenset[object], order: list[object]) -> str:
    """One cell: the granted interactions in the enumeration's order; the four reads folded into "reads"."""
    reads = [i for i in order if str(i) in ("read", "vread", "history", "search")]
    names: list[str] = []
    if reads and all(i in granted for i in reads):
        names.append("reads")
        rest = [i for i in order if i in granted and i not in reads]
    else:
        rest = [i for i in order if i in granted]
    names += [f"`{i}`" if str(i).startswith("$") else str(i) for i in rest]
    return ", ".join(names) if names else "—"


def render() -> str:
    """The Markdown block (without the markers)."""
    permissions, role_enum, interaction_enum, narrative, sensitive = _imports()
    roles = list(role_enum)  # type: ignore[call-overload]
    order = list(interaction_enum)  # type: ignore[call-overload]
    lines = ["| resource type | " + " | ".join(str(r) for r in roles) + " |",
             "|---|" + "---|" * len(roles)]
    for resource_type, grants in permissions.items():  # type: ignore[attr-defined]
        cells = [cell(grants.get(role, frozenset()), order) for role in roles]
        lines.append(f"| `{resource_type}` | " + " | ".join(cells) + " |")
    readers = ", ".join(str(r) for r in roles if r in narrative)  # type: ignore[operator]
    sensitive_readers = ", ".join(str(r) for r in roles if r in sensitive)  # type: ignore[operator]
    return "\n".join([
        "Generated from `layers/common/expediente/permissions.py` by `python -m tools.role_matrix --write`; "
        "\"reads\" = read, vread, history and search; — = nothing (403). Nobody holds `delete`.",
        "",
        *lines,
        "",
        f"Note narrative (Composition text) is shown to: {readers}; other roles get the note without its text, "
        "labelled `REDACTED`.",
        f"Diagnoses labelled sensitive (HIV, psychiatry, substance use, STI, sexual and reproductive health) are "
        f"shown whole to: {sensitive_readers}; other roles that read Conditions get them with the code masked "
        "(`data-absent-reason` `masked`, labelled restricted).",
    ])


def replace_block(text: str, block: str) -> str:
    """``text`` with the content between the markers replaced by ``block``; ValueError without markers."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no {START} … {END} block")
    return text[:start + len(START)] + "\n" + block + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the block in README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 when README.md's block is out of date")
    args = parser.parse_args(argv)
    block = render()
    if not args.write and not args.check:
        print(block)
        return 0
    current = README.read_text(encoding="utf-8")
    wanted = replace_block(current, block)
    if args.check:
        if wanted != current:
            print("README.md role matrix is out of date: run python -m tools.role_matrix --write", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
