"""Operator commands (run by the people who operate Expediente, not by its users).

``python -m ops create-tenant ...`` creates a clinic chain: its tenant record, its chain
``Organization`` and its first admin. Run from the repository root; the shared package in
``layers/common`` is put on the path when it is not installed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("expediente") is None:  # pragma: no cover - depends on how ops is launched
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "layers" / "common"))
