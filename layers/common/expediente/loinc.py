"""LOINC laboratory tests and panels (FHIR ``Observation.code``, ``ServiceRequest.code``).

The catalogue is ``data/loinc_lab.csv``: a subset of LOINC (common orderable
lab tests and panels), one row per code, LOINC fields copied unmodified from
published Regenstrief files (see ``data/SOURCES.md`` and ``data/LOINC_NOTICE.md``):

- ``long_common_name``: LOINC ``LONG_COMMON_NAME``;
- ``spanish_name`` / ``spanish_source``: the name from an official LOINC
  linguistic variant (es-MX, es-ES, es-AR) and which one. No variant file was
  available when the subset was built, so these are empty and the English name
  is displayed; LOINC's licence does not allow our own translations;
- ``units``: LOINC ``EXAMPLE_UCUM_UNITS``, ``;``-separated;
- ``system``: LOINC ``SYSTEM`` (specimen), empty where not available;
- ``class``: LOINC ``CLASS``;
- ``panel``: LOINC ``ORDER_OBS`` (``Order`` for panels that are only ordered,
  ``Both`` for tests that are ordered and reported).

A LOINC code is digits, a hyphen and a check digit computed with the Mod 10
algorithm of the LOINC Users' Guide; :func:`is_valid_code` checks the form and
the digit, :func:`lab_test` also requires the code to be in the catalogue.

Nothing is loaded at import: the CSV is read on first use and cached.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from expediente.errors import Invalid

SYSTEM = "http://loinc.org"

# The data file's own version: bump when rows change. The LOINC releases behind it are in SOURCES.md.
CATALOGUE_VERSION = "loinc_lab.csv v1 (LOINC Universal Lab Order Codes value set + Top 2000 v1.6; units LOINC 2.67)"

_DATA_FILE = "loinc_lab.csv"
_PANEL = "Order"
_CODE = re.compile(r"([0-9]{1,7})-([0-9])", re.ASCII)
_WORD = re.compile(r"[0-9a-z]+")


@dataclass(frozen=True)
class LabTest:
    """A LOINC laboratory test or panel from the shipped catalogue.

    ``name`` is the LOINC long common name, ``name_es`` the official Spanish
    name (``None`` when no LOINC linguistic variant provides one), ``units`` the
    example UCUM units, ``specimen`` the LOINC system (empty when unknown),
    ``klass`` the LOINC class and ``panel`` whether LOINC marks it order-only
    (a panel).
    """

    code: str
    name: str
    name_es: str | None
    units: tuple[str, ...]
    specimen: str
    klass: str
    panel: bool

    @property
    def display(self) -> str:
        """The name to show: Spanish when LOINC provides it, otherwise English."""
        return self.name_es or self.name

    def coding(self) -> dict[str, str]:
        """The FHIR ``Coding``: LOINC system, code and display."""
        return {"system": SYSTEM, "code": self.code, "display": self.display}


def check_digit(digits: str) -> int:
    """The LOINC Mod 10 check digit of the part before the hyphen (``"2345"`` → ``7``).

    Users' Guide algorithm: counting from the right, the digits in odd positions
    form a number that is doubled; the digits in even positions are appended;
    the digits of the result are summed; the check digit is what is missing to
    the next multiple of ten.
    """
    if not digits or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"not a LOINC code body: {digits!r}")
    from_right = digits[::-1]
    doubled = str(2 * int(from_right[0::2][::-1]))
    appended = doubled + from_right[1::2][::-1]
    total = sum(int(digit) for digit in appended)
    return (10 - total % 10) % 10


def is_valid_code(code: str) -> bool:
    """Whether ``code`` is written as a LOINC code (digits, hyphen, correct check digit)."""
    match = _CODE.fullmatch(code) if isinstance(code, str) else None
    return match is not None and check_digit(match.group(1)) == int(match.group(2))


def lookup(code: str) -> LabTest | None:
    """The catalogue entry for ``code`` (surrounding whitespace ignored), or ``None``."""
    if not isinstance(code, str):
        return None
    return _catalogue().get(code.strip())


def lab_test(code: str, *, where: str) -> LabTest:
    """Validate a client's LOINC code and return its catalogue entry.

    ``where`` is the FHIRPath of the value (``Observation.code.coding[0].code``)
    and is reported as the error's ``expression``. Raises
    :class:`~expediente.errors.Invalid`, naming the code as sent, when it is not
    written as a LOINC code, when its check digit is wrong, or when it is a
    LOINC code that is not in the laboratory catalogue.
    """
    shown = _shown(code)
    found = lookup(code)
    if found is not None:
        return found
    if not isinstance(code, str):
        raise Invalid(f"{shown} is not a LOINC code", expression=where)
    text = code.strip()
    if not text:
        raise Invalid("An empty string is not a LOINC code", expression=where)
    match = _CODE.fullmatch(text)
    if match is None:
        raise Invalid(f"{shown} is not a LOINC code: LOINC codes are digits, a hyphen and a check digit "
                      f"(e.g. 2345-7)", expression=where)
    expected = check_digit(match.group(1))
    if expected != int(match.group(2)):
        raise Invalid(f"{shown} is not a LOINC code: the check digit of {match.group(1)} is {expected}",
                      expression=where)
    raise Invalid(f"LOINC {shown} is not in the laboratory catalogue ({CATALOGUE_VERSION})", expression=where)


def search(text: str, limit: int = 20) -> list[LabTest]:
    """Tests whose English or Spanish name has a word starting with each word of ``text``.

    Matching ignores case and accents (``"potas"`` finds potassium,
    ``"hemoglobina glucosilada"`` works once Spanish names are present). Results
    whose first name word matches the first query word come first, then shorter
    names; at most ``limit`` are returned.
    """
    wanted = _words(text)
    if not wanted or limit <= 0:
        return []
    hits: list[tuple[bool, int, str, LabTest]] = []
    for test, names in _index():
        if any(all(any(word.startswith(prefix) for word in name) for prefix in wanted) for name in names):
            leading = any(name and name[0].startswith(wanted[0]) for name in names)
            hits.append((not leading, len(test.name), test.code, test))
    hits.sort(key=lambda hit: hit[:3])
    return [hit[3] for hit in hits[:limit]]


def catalogue() -> tuple[LabTest, ...]:
    """Every catalogue entry, in file order."""
    return tuple(_catalogue().values())


# -- data, read on first use ---------------------------------------------------------------------------


@cache
def _catalogue() -> dict[str, LabTest]:
    text = resources.files("expediente.data").joinpath(_DATA_FILE).read_text(encoding="utf-8")
    tests: dict[str, LabTest] = {}
    for row in csv.DictReader(text.splitlines()):
        code = row["loinc"]
        if code in tests or not is_valid_code(code):
            raise ValueError(f"{_DATA_FILE}: duplicate or malformed LOINC code {code!r}")
        tests[code] = LabTest(
            code=code,
            name=row["long_common_name"],
            name_es=row["spanish_name"] or None,
            units=tuple(unit for unit in row["units"].split(";") if unit),
            specimen=row["system"],
            klass=row["class"],
            panel=row["panel"] == _PANEL,
        )
    return tests


@cache
def _index() -> tuple[tuple[LabTest, tuple[tuple[str, ...], ...]], ...]:
    return tuple((test, tuple(_words(name) for name in _names(test))) for test in _catalogue().values())


def _names(test: LabTest) -> Iterable[str]:
    yield test.name
    if test.name_es:
        yield test.name_es


def _words(text: str) -> tuple[str, ...]:
    if not isinstance(text, str):
        return ()
    plain = "".join(char for char in unicodedata.normalize("NFKD", text) if not unicodedata.combining(char))
    return tuple(_WORD.findall(plain.casefold()))


def _shown(code: object) -> str:
    text = code.strip() if isinstance(code, str) else repr(code)
    return text if len(text) <= 40 else text[:40] + "…"
