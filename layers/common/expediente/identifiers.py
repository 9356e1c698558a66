"""Identifiers and the NOM-024 fundamental catalogues.

CURP (NOM-024 Tabla 1): validated, never generated. python-stdnum supplies the
check digit and date rules, but it rejects the ``X`` sex letter RENAPO issues
since 2023, so the structure is checked here and each failure says which part is
wrong. The generic placeholder CURP is refused: a patient without CURP is
registered without one and flagged for later identification.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from datetime import date
from functools import cache
from importlib import resources

from stdnum.exceptions import ValidationError as StdnumError
from stdnum.mx import curp as stdnum_curp

from expediente.errors import Invalid

CURP_SYSTEM = "urn:oid:2.16.840.1.113883.4.629"
CLUES_SYSTEM = "urn:oid:2.16.840.1.113883.4.631"
CEDULA_SYSTEM = "urn:oid:2.16.840.1.113883.3.215.12.18"
NATIONALITY_SYSTEM = "urn:oid:2.16.840.1.113883.3.215.12.15"
FOLIO_SYSTEM = "urn:expediente:folio"  # the tenant's internal record number (NOM-024 Tabla 1)
ACCESSION_SYSTEM = "urn:expediente:accession"  # an imaging order's number (DICOM AccessionNumber)
IDENTIFIER_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"  # ACSN, PLAC, MR, ...
# Mexican names carry two surnames: FHIR's HumanName extensions for the father's and the mother's.
FATHERS_FAMILY = "http://hl7.org/fhir/StructureDefinition/humanname-fathers-family"
MOTHERS_FAMILY = "http://hl7.org/fhir/StructureDefinition/humanname-mothers-family"

GENERIC_CURP = "XXXX999999XXXXXX99"
BORN_ABROAD = "NE"
UNKNOWN_NATIONALITY = "NND"

_CURP_SHAPE = re.compile(r"^[A-Z][AEIOUX][A-Z]{2}\d{6}[HMX][A-Z]{2}[B-DF-HJ-NP-TV-Z]{3}[0-9A-Z]\d$")
_CLUES = re.compile(r"^(?P<state>[A-Z]{2})(?P<institution>[A-Z]{3})(?P<number>\d{6})$")
_CEDULA = re.compile(r"^\d{7,8}$")
_FOLIO = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,17}$")


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("expediente.data").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


@cache
def states() -> dict[str, str]:
    """INEGI state key → CURP state abbreviation (01–32 plus 00, 88, 99)."""
    return {row["clave"]: row["abreviatura"] for row in _rows("entidades_federativas_dgis.csv")}


@cache
def curp_states() -> dict[str, str]:
    """CURP state abbreviation → INEGI key (``NE`` = born abroad)."""
    mapping = {abbr: key for key, abbr in states().items() if key.isdigit() and 1 <= int(key) <= 32}
    mapping[BORN_ABROAD] = BORN_ABROAD
    return mapping


@cache
def municipalities() -> frozenset[tuple[str, str]]:
    """(state key, municipality key) pairs of the INEGI catalogue."""
    return frozenset((row["CLAVE_ENTIDAD"], row["CLAVE_MUNICIPIO"]) for row in _rows("municipios_inegi_ssa.csv"))


@cache
def nationalities() -> frozenset[str]:
    """RENAPO nationality keys, plus ``NND`` (unknown)."""
    keys = {row["clave nacionalidad"].strip() for row in _rows("cat_nacionalidades.csv")}
    return frozenset(keys | {UNKNOWN_NATIONALITY})


def normalize_curp(value: str) -> str:
    return re.sub(r"[\s\-_]", "", value).upper()


def validate_curp(value: str, *, where: str = "identifier") -> str:
    """The CURP in canonical form; raises :class:`Invalid` saying what is wrong.

    Checks, in order: length, shape, the generic placeholder, the birth date,
    the state, the check digit.
    """
    curp = normalize_curp(value)
    if curp == GENERIC_CURP:
        raise Invalid(
            "The generic CURP is not accepted; register the patient without CURP "
            "(the record is flagged for later identification)", expression=where)
    if len(curp) != 18:
        raise Invalid(f"CURP must have 18 characters, got {len(curp)}", expression=where)
    if not _CURP_SHAPE.match(curp):
        raise Invalid(
            "CURP format is wrong: expected 4 letters, birth date YYMMDD, sex H/M/X, "
            "2-letter state, 3 consonants, a differentiator and a check digit", expression=where)
    if curp[:4] in getattr(stdnum_curp, "_name_blacklist", ()):
        raise Invalid("CURP starts with a word RENAPO never assigns", expression=where)
    try:
        stdnum_curp.get_birth_date(curp)
    except StdnumError as exc:
        raise Invalid(f"CURP birth date {curp[4:10]} is not a real date", expression=where) from exc
    if curp[11:13] not in curp_states():
        raise Invalid(f"CURP state code {curp[11:13]} is not a Mexican state or NE", expression=where)
    expected = stdnum_curp.calc_check_digit(curp)
    if curp[17] != expected:
        raise Invalid("CURP check digit does not match (the CURP has a typo)", expression=where)
    return curp


def curp_birth_date(curp: str) -> date:
    return stdnum_curp.get_birth_date(curp)


def curp_gender(curp: str) -> str:
    """The FHIR administrative gender the CURP's sex letter states."""
    return {"H": "male", "M": "female", "X": "other"}[curp[10]]


def curp_birth_state(curp: str) -> str:
    """The INEGI birth-state key (or ``NE``) the CURP states."""
    return curp_states()[curp[11:13]]


def validate_clues(value: str, *, where: str = "identifier") -> str:
    """A CLUES key: 11 characters, state abbreviation + institution + 6 digits."""
    clues = value.strip().upper()
    match = _CLUES.match(clues)
    if len(clues) != 11 or not match:
        raise Invalid("CLUES must be 11 characters: 2-letter state, 3-letter institution, 6 digits",
                      expression=where)
    if match["state"] not in curp_states() or match["state"] == BORN_ABROAD:
        raise Invalid(f"CLUES state {match['state']} is not a Mexican state", expression=where)
    return clues


def validate_cedula(value: str, *, where: str = "identifier") -> str:
    """A cédula profesional number (Registro Nacional de Profesionistas): 7 or 8 digits."""
    cedula = value.strip()
    if not _CEDULA.match(cedula):
        raise Invalid("Cédula profesional must be 7 or 8 digits", expression=where)
    return cedula


def validate_folio(value: str, *, where: str = "identifier") -> str:
    """The internal record number: up to 18 characters (NOM-024 Tabla 1)."""
    folio = value.strip().upper()
    if not _FOLIO.match(folio):
        raise Invalid("Folio must be 1-18 letters, digits or '-'", expression=where)
    return folio


def fold(text: str) -> str:
    """Upper case without diacritics, for case- and accent-insensitive search.

    Ñ folds to N too: people type "nunez" on keyboards without ñ.
    """
    stripped = "".join(c for c in unicodedata.normalize("NFD", text.upper()) if not unicodedata.combining(c))
    return re.sub(r"\s+", " ", stripped).strip()
