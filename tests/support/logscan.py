"""Every log line of the test suite scanned for patient data (issue 7, item 7): a pytest plugin.

What the code under test writes (Powertools' JSON log lines and metrics on stdout, anything on stderr,
and every ``logging`` record, which pytest captures per test phase) is scanned after each phase
(setup, call, teardown). A phase whose output holds patient data fails, even if its assertions
passed. Patient data means:

* a CURP (any string shaped like one: 4 letters, birth date, sex, state, consonants, 2 characters);
* a value a test registered with :func:`register` (the data factories register the names they put in
  a Patient and the narrative they put in a note: ``tests/integration/*/conftest.py``);
* the title of any ICD-10 diagnosis of the DGIS catalogue the product ships (``expediente/data``),
  compared accent- and case-insensitively, whole words.

The local stack that the e2e tests start runs in its own process and writes to a log file; the e2e
fixture hands that file to :func:`check_file` when the stack stops. The counts (lines and phases
scanned) are printed at the end of the session and written to ``build/logscan.json``.

Registered in ``tests/conftest.py`` (its hooks are imported there). ``-s`` disables pytest's
capture, and with it this scan.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

CURP = re.compile(r"(?<![A-Z0-9])[A-Z]{4}\d{6}[HMX][A-Z]{5}[A-Z0-9]\d(?![A-Z0-9])")
_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
MIN_LENGTH = 4  # shorter registered values (initials) would match ordinary words
MIN_TITLE_WORDS = 2  # one-word diagnosis titles ("Cólera") are checked only when a test registers them
_REGISTERED: set[str] = set()
_compiled: tuple[frozenset[str], re.Pattern[str] | None] = (frozenset(), None)
_TOTALS = {"phases": 0, "lines": 0, "files": 0, "file_lines": 0, "findings": 0}
ROOT = Path(__file__).resolve().parents[2]


def fold(text: str) -> str:
    """Upper case, no accents, single spaces: how values and lines are compared."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.upper().split())


def register(*values: str | None) -> None:
    """Mark values the tests write into patient records (names, narrative) as never to be logged."""
    for value in values:
        if value:
            for part in re.split(r"<[^>]*>", value):  # narrative arrives as XHTML
                folded = fold(part)
                if len(folded) >= MIN_LENGTH:
                    _REGISTERED.add(folded)


def _registered_pattern() -> re.Pattern[str] | None:
    global _compiled
    current = frozenset(_REGISTERED)
    if current != _compiled[0]:
        words = sorted(current, key=len, reverse=True)
        pattern = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")(?!\w)") if words else None
        _compiled = (current, pattern)
    return _compiled[1]


@cache
def _titles() -> dict[str, list[str]]:
    """Folded DGIS ICD-10 titles of at least :data:`MIN_TITLE_WORDS` words, by their first word."""
    text = resources.files("expediente.data").joinpath("cie10_dgis_2014.csv").read_text(encoding="utf-8")
    by_first: dict[str, list[str]] = {}
    for row in csv.DictReader(text.splitlines()):
        title = fold(row["descripcion"].replace("  ", ", "))
        words = title.split()
        if len(words) >= MIN_TITLE_WORDS:
            by_first.setdefault(words[0], []).append(title)
    return by_first


def _diagnosis_in(folded: str) -> str | None:
    titles = _titles()
    for match in re.finditer(r"[A-Z0-9]+", folded):
        for title in titles.get(match.group(), ()):
            end = match.start() + len(title)
            if folded.startswith(title, match.start()) and (end == len(folded) or not folded[end].isalnum()):
                return title
    return None


@dataclass(frozen=True)
class Finding:
    kind: str  # "CURP", "registered value", "diagnosis"
    line_number: int
    excerpt: str  # the line with the value masked

    def __str__(self) -> str:
        return f"line {self.line_number}: {self.kind} in {self.excerpt[:200]!r}"


def _mask(line: str, value: str) -> str:
    return line.replace(value, "*" * len(value)) if value in line else line


def scan_text(text: str) -> tuple[int, list[Finding]]:
    """(lines scanned, findings) for a block of captured output."""
    findings: list[Finding] = []
    pattern = _registered_pattern()
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        curp = CURP.search(line)
        if curp:
            findings.append(Finding("CURP", number, _mask(line, curp.group())))
            continue
        # JSON log lines escape accents (\u00f3): compare the text a reader would see.
        folded = fold(_UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), line))
        hit = pattern.search(folded) if pattern is not None else None
        if hit:
            findings.append(Finding("registered value", number, _mask(folded, hit.group())))
            continue
        title = _diagnosis_in(folded)
        if title:
            findings.append(Finding("diagnosis", number, _mask(folded, title)))
    return len(lines), findings


def register_demo_patients() -> None:
    """Register the names of the local stack's seeded (fictitious) patients, for scanning its log."""
    from local.seed import DEMO_TENANTS

    for tenant in DEMO_TENANTS:
        register(tenant.patient.given, tenant.patient.first_surname, tenant.patient.second_surname)


def check_file(path: Path) -> list[Finding]:
    """Scan a log file another process wrote (the e2e local stack); counts it in the session totals."""
    count, findings = scan_text(path.read_text(encoding="utf-8", errors="replace"))
    _TOTALS["files"] += 1
    _TOTALS["file_lines"] += count
    _TOTALS["findings"] += len(findings)
    return findings


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """Scan what the phase printed and logged; fail the phase when it holds patient data."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    lines, findings = 0, []
    suffix = f" {report.when}"
    sections = []
    for title, content in report.sections:
        if title.startswith("Captured") and title.endswith(suffix):
            count, found = scan_text(content)
            lines += count
            findings += found
            if found:  # pytest prints a failed phase's output: show it masked, not the patient data again
                masked = content.splitlines()
                for finding in found:
                    masked[finding.line_number - 1] = finding.excerpt
                content = "\n".join(masked)
        sections.append((title, content))
    report.sections = sections
    report.user_properties.append((f"logscan:{report.when}", lines))  # a copy of item.user_properties
    if findings and not item.get_closest_marker("logscan_exempt"):
        report.outcome = "failed"
        listed = "\n".join(f"  {f}" for f in findings[:20])
        report.longrepr = (f"log scan: patient data in what the code under test wrote during {report.when} "
                           f"({len(findings)} line(s)); never log names, CURP, diagnoses or note text:\n{listed}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    lines = sum(int(n) for key, n in report.user_properties if key == f"logscan:{report.when}")
    _TOTALS["phases"] += 1
    _TOTALS["lines"] += lines
    if report.failed and isinstance(report.longrepr, str) and report.longrepr.startswith("log scan:"):
        _TOTALS["findings"] += 1


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "logscan_exempt: the test writes patient data to its log on purpose")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if hasattr(terminalreporter.config, "workerinput"):
        return  # an xdist worker: the controller reports the totals
    terminalreporter.write_line(
        f"log scan: {_TOTALS['lines']} captured lines in {_TOTALS['phases']} test phases and "
        f"{_TOTALS['file_lines']} lines of {_TOTALS['files']} local-stack log file(s) scanned; "
        f"{_TOTALS['findings']} with patient data")
    target = ROOT / "build"
    if target.is_dir():
        (target / "logscan.json").write_text(json.dumps(_TOTALS, indent=1) + "\n")


def totals() -> dict[str, int]:
    return dict(_TOTALS)
