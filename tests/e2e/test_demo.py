"""``make demo`` runs green against the local stack: the whole clinic day, as its script describes it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_the_clinic_day_runs_as_described(local_stack, capsys):
    from local import demo

    status = demo.main(["--stack-file", str(local_stack.stack_file)])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert "The day ran as described." in printed.out
    for step in ("1. Reception", "4. Physician: prescriptions", "5. Laboratory", "7. Radiology", "8. Pharmacy",
                 "10. The patient"):
        assert step in printed.out
    assert printed.out.count("✓") == 25  # every step of the script reported what it did
    assert "downloaded their whole record as one FHIR Bundle (Patient/$everything" in printed.out


def test_the_demo_says_when_the_stack_is_not_running(tmp_path, capsys):
    from local import demo

    assert demo.main(["--stack-file", str(tmp_path / "missing.json")]) == 2
    assert "make run" in capsys.readouterr().err
