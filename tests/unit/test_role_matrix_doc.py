"""The README's role matrix is the permission table, rendered; it cannot drift from the code."""

from __future__ import annotations

import pytest

from expediente.permissions import PERMISSIONS, Interaction, Role
from tools import role_matrix


def test_the_readme_role_matrix_is_what_the_permission_table_says() -> None:
    assert role_matrix.main(["--check"]) == 0, "run: python -m tools.role_matrix --write"


def test_every_resource_type_and_role_of_the_table_has_its_row_and_column() -> None:
    block = role_matrix.render()
    header = next(line for line in block.splitlines() if line.startswith("| resource type"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == [str(r) for r in Role]
    rows = [line for line in block.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(PERMISSIONS)


def test_a_cell_lists_exactly_the_granted_interactions() -> None:
    everything = list(Interaction)
    reads = frozenset({Interaction.READ, Interaction.VREAD, Interaction.HISTORY, Interaction.SEARCH})
    assert role_matrix.cell(reads | {Interaction.CREATE}, everything) == "reads, create"
    assert role_matrix.cell(frozenset({Interaction.READ, Interaction.SEARCH}), everything) == "read, search"
    assert role_matrix.cell(frozenset({Interaction.SIGN}), everything) == "`$sign`"
    assert role_matrix.cell(frozenset(), everything) == "—"


def test_a_changed_cell_is_reported_as_drift(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(role_matrix.replace_block(role_matrix.README.read_text(encoding="utf-8"),
                                                role_matrix.render()), encoding="utf-8")
    monkeypatch.setattr(role_matrix, "README", readme)
    assert role_matrix.main(["--check"]) == 0
    monkeypatch.setitem(PERMISSIONS["User"], Role.PHYSICIAN, frozenset({Interaction.READ}))
    assert role_matrix.main(["--check"]) == 1


def test_a_readme_without_markers_is_an_error() -> None:
    with pytest.raises(ValueError, match="role-matrix"):
        role_matrix.replace_block("# no markers here\n", "x")
