"""The log scanner of the test suite (tests/support/logscan.py) can fail: it finds CURPs, registered names
and note text, and diagnosis titles, and a test whose code logs one of them fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support import logscan
from tests.support.curp import make_curp

ROOT = Path(__file__).resolve().parents[2]


def _powertools_line(**extra: object) -> str:
    return json.dumps({"level": "INFO", "message": "patient registered", "service": "expediente",
                       "tenant": "t-34qkugxydk", "patient_id": "toueil3jjghf3sau", **extra})


def test_a_clean_log_line_passes() -> None:
    count, findings = logscan.scan_text(_powertools_line() + "\n" + _powertools_line(request_id="abc-123"))
    assert count == 2 and findings == []


def test_a_curp_in_a_log_line_is_found_and_masked() -> None:
    curp = make_curp()
    _, findings = logscan.scan_text(_powertools_line() + "\n" + _powertools_line(curp=curp))
    assert [(f.kind, f.line_number) for f in findings] == [("CURP", 2)]
    assert curp not in str(findings[0])


def test_registered_names_and_note_text_are_found_whatever_the_case_and_accents() -> None:
    logscan.register("Zuñiga", "Padecimiento de prueba con cefalea pulsátil.")
    _, findings = logscan.scan_text("\n".join([
        _powertools_line(family="ZUNIGA"),
        _powertools_line(text='<div xmlns="http://www.w3.org/1999/xhtml">padecimiento de prueba con CEFALEA '
                              'PULSATIL.</div>'),
        _powertools_line(note="zuñigas"),  # another word that only starts the same: not the value
    ]))
    assert [(f.kind, f.line_number) for f in findings] == [("registered value", 1), ("registered value", 2)]


def test_a_diagnosis_title_from_the_catalogue_is_found() -> None:
    _, findings = logscan.scan_text(_powertools_line(reason="Hipertensión esencial (primaria)"))
    assert [f.kind for f in findings] == ["diagnosis"]
    _, none = logscan.scan_text(_powertools_line(code="I10X"))  # a code alone is not a diagnosis text
    assert none == []


def test_a_test_whose_code_logs_a_curp_fails_even_when_its_assertions_pass(tmp_path: Path) -> None:
    """The plugin itself, in a separate pytest run: a passing test that logs a CURP is reported failed."""
    curp = make_curp(prefix="LOPM")
    (tmp_path / "test_planted.py").write_text(textwrap.dedent(f"""
        import logging

        def test_logs_through_logging():
            logging.getLogger("expediente").warning("patient %s registered", "{curp}")
            assert True

        def test_prints_like_powertools():
            print('{{"level": "INFO", "message": "ok", "curp": "{curp}"}}')

        def test_clean():
            logging.getLogger("expediente").warning("patient %s registered", "toueil3jjghf3sau")
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers" / "common")])}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.support.logscan", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_planted.py")],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 failed, 1 passed" in run.stdout, run.stdout
    assert "FAILED test_planted.py::test_logs_through_logging - log scan: patient data" in run.stdout
    assert "FAILED test_planted.py::test_prints_like_powertools - log scan: patient data" in run.stdout
    assert curp not in run.stdout  # the report masks what it found
    assert "in 9 test phases" in run.stdout and "2 with patient data" in run.stdout  # 3 tests x 3 phases
