"""Patient search: FHIR parameters → one bounded DynamoDB Query on the search index.

The index lives in the patients table, one partition per tenant
(``<tenant>#PIDX``). Each patient writes small index items, one per search key:
``F#<surname token>``, ``G#<given token>``, ``N#<any name token>``,
``B#<birth date>``, ``S#<gender>``, ``A#`` (all), each ending in ``#<id>``. A
search queries the most selective parameter as a key prefix and checks the
others with a filter on attributes the items carry, so every search reads at
most ``_count`` index items per page whatever the size of the table: never a
Scan. Names are folded (upper case, no accents) so matching is case- and
accent-insensitive, by prefix of any word, as FHIR string search expects.
Identifier search goes through the CURP blind index or the folio guard instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from expediente import identifiers as ids
from expediente.errors import Invalid

from .model import Demographics

SUPPORTED = frozenset({"identifier", "family", "given", "name", "birthdate", "gender", "active",
                       "_count", "_page", "_id"})
_DATE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb)?(\d{4}(-\d{2}(-\d{2})?)?)$")
_HIGH = "\uffff"


@dataclass(frozen=True)
class IndexRange:
    """A key condition on the index sort key: a prefix, or a range between two keys."""

    prefix: str | None = None
    low: str | None = None
    high: str | None = None


@dataclass(frozen=True)
class PatientQuery:
    identifier: tuple[str | None, str] | None = None  # (system, value)
    id: str | None = None
    key: IndexRange = field(default_factory=lambda: IndexRange(prefix="A#"))
    # Further conditions checked on index item attributes: (attribute, op, value)
    filters: tuple[tuple[str, str, Any], ...] = ()


def tokens(text: str) -> list[str]:
    return [t for t in ids.fold(text).replace("-", " ").split() if t]


def index_entries(demo: Demographics) -> dict[str, dict[str, Any]]:
    """The index sort-key prefixes (without the id) and attributes a patient is found by."""
    surnames = [s for s in (demo.first_surname, demo.second_surname) if s]
    family_tokens = {t for s in surnames for t in tokens(s)} | {ids.fold(s) for s in surnames}
    given_tokens = {t for g in demo.given for t in tokens(g)} | {ids.fold(" ".join(demo.given))}
    attrs = {
        "bd": demo.birth_date,
        "g": demo.gender,
        "act": demo.active,
        "fam": " " + " ".join(sorted(family_tokens)),
        "giv": " " + " ".join(sorted(given_tokens)),
    }
    keys = ([f"F#{t}" for t in sorted(family_tokens)] + [f"G#{t}" for t in sorted(given_tokens)]
            + [f"N#{t}" for t in sorted(family_tokens | given_tokens)]
            + [f"B#{demo.birth_date}", f"S#{demo.gender}", "A#"])
    return {key: attrs for key in keys}


def _date_range(value: str) -> tuple[str, str, str]:
    """(op, low, high) for a FHIR date parameter with optional prefix and partial precision."""
    match = _DATE.match(value)
    if not match:
        raise Invalid(f"birthdate {value!r} must be a date such as 1980, 1980-05 or ge1980-05-12",
                      expression="birthdate")
    op, date = match.group(1) or "eq", match.group(2)
    low = date + {4: "-01-01", 7: "-01"}.get(len(date), "")
    high = date + {4: "-12-31", 7: "-31"}.get(len(date), "")
    if op in ("ne", "sa", "eb"):
        raise Invalid(f"birthdate prefix {op} is not supported (use eq, gt, lt, ge, le)", expression="birthdate")
    return op, low, high


def _identifier(value: str) -> tuple[str | None, str]:
    system, _, code = value.rpartition("|")
    if not code:
        raise Invalid("identifier must be system|value or value", expression="identifier")
    return (system or None), code


def parse(params: dict[str, str]) -> PatientQuery:
    """Turn search parameters into a query; unknown parameters answer 400 (strict handling)."""
    unknown = sorted(set(params) - SUPPORTED)
    if unknown:
        raise Invalid(f"Unsupported Patient search parameter(s): {', '.join(unknown)}", expression=unknown[0])
    conditions: list[tuple[str, IndexRange, tuple[str, str, Any]]] = []
    for name, kind, attr in (("family", "F", "fam"), ("given", "G", "giv"), ("name", "N", None)):
        if params.get(name):
            folded = ids.fold(params[name])
            if not folded:
                raise Invalid(f"{name} must not be empty", expression=name)
            conditions.append((name, IndexRange(prefix=f"{kind}#{folded}"),
                               (attr or "fam|giv", "word-prefix", folded)))
    if params.get("birthdate"):
        op, low, high = _date_range(params["birthdate"])
        key_range = {
            "eq": IndexRange(low=f"B#{low}", high=f"B#{high}#{_HIGH}"),
            "ge": IndexRange(low=f"B#{low}", high=f"B#{_HIGH}"),
            "gt": IndexRange(low=f"B#{high}#{_HIGH}", high=f"B#{_HIGH}"),
            "le": IndexRange(low="B#", high=f"B#{high}#{_HIGH}"),
            "lt": IndexRange(low="B#", high=f"B#{low}"),
        }[op]
        bounds = {"eq": (low, high), "ge": (low, "9999"), "gt": (high + _HIGH, "9999"),
                  "le": ("0000", high), "lt": ("0000", low)}[op]
        conditions.append(("birthdate", key_range, ("bd", "between", bounds)))
    if params.get("gender"):
        gender = params["gender"]
        if gender not in ("male", "female", "other", "unknown"):
            raise Invalid("gender must be male, female, other or unknown", expression="gender")
        conditions.append(("gender", IndexRange(prefix=f"S#{gender}#"), ("g", "=", gender)))
    filters = []
    if params.get("active"):
        if params["active"] not in ("true", "false"):
            raise Invalid("active must be true or false", expression="active")
        filters.append(("act", "=", params["active"] == "true"))
    identifier = _identifier(params["identifier"]) if params.get("identifier") else None
    if identifier and identifier[0] not in (None, ids.CURP_SYSTEM, ids.FOLIO_SYSTEM):
        raise Invalid(f"identifier system {identifier[0]} is not searchable (CURP or folio)", expression="identifier")
    if conditions:
        _, key, _ = conditions[0]
        filters.extend(condition for _, _, condition in conditions[1:])
    else:
        key = IndexRange(prefix="A#")
    return PatientQuery(identifier=identifier, id=params.get("_id") or None, key=key, filters=tuple(filters))


def matches(attrs: dict[str, Any], filters: tuple[tuple[str, str, Any], ...]) -> bool:
    """Whether a patient's index attributes (or demographics) satisfy the extra conditions."""
    for attr, op, value in filters:
        if op == "word-prefix":
            fields = [attrs.get(a, "") for a in attr.split("|")]
            if not any(f" {value}" in text for text in fields):
                return False
        elif op == "between":
            if not (value[0] <= attrs.get("bd", "") <= value[1]):
                return False
        elif attrs.get(attr) != value:
            return False
    return True
