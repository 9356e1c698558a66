"""Quantities with UCUM units, as the formulary and the dosing rules use them.

Only what prescriptions need: masses, volumes and international units convert within their kind;
a presentation unit (a UCUM annotation such as ``{tablet}``) counts whole things and converts to
nothing else. An amount the rules cannot convert is refused with a message, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UCUM = "http://unitsofmeasure.org"

# unit -> (kind, factor to the kind's base unit)
_UNITS: dict[str, tuple[str, float]] = {
    "ug": ("mass", 1e-6),
    "mg": ("mass", 1e-3),
    "g": ("mass", 1.0),
    "mL": ("volume", 1e-3),
    "L": ("volume", 1.0),
    "[iU]": ("iu", 1.0),
    "[IU]": ("iu", 1.0),
    "k[iU]": ("iu", 1e3),
    "mmol": ("amount", 1e-3),
    "meq": ("equivalents", 1e-3),
}
_ANNOTATION = re.compile(r"^\{[a-z][a-z -]{0,30}\}$")
_QUANTITY = re.compile(r"^\s*(?P<value>\d+(?:\.\d+)?)\s+(?P<unit>\S+)\s*$")


@dataclass(frozen=True)
class Quantity:
    value: float
    unit: str

    def __str__(self) -> str:
        return f"{format_number(self.value)} {self.unit}"

    @property
    def kind(self) -> str | None:
        return kind(self.unit)

    def to(self, unit: str) -> Quantity | None:
        """This amount in ``unit``, or None when the two units are not of the same kind."""
        if unit == self.unit:
            return self
        here, there = _UNITS.get(self.unit), _UNITS.get(unit)
        if here is None or there is None or here[0] != there[0]:
            return None
        return Quantity(self.value * here[1] / there[1], unit)


def kind(unit: str) -> str | None:
    """``mass``, ``volume``, ``iu``… for a convertible unit, ``count`` for a presentation unit, else None."""
    known = _UNITS.get(unit)
    if known is not None:
        return known[0]
    return "count" if _ANNOTATION.match(unit) else None


def known_unit(unit: str) -> bool:
    return kind(unit) is not None


def parse(text: str) -> Quantity | None:
    """``"500 mg"`` → Quantity(500, "mg"); ``""`` → None; raises ValueError for anything else."""
    if not text.strip():
        return None
    match = _QUANTITY.match(text)
    if match is None or not known_unit(match["unit"]):
        raise ValueError(f"not a quantity with a known UCUM unit: {text!r}")
    return Quantity(float(match["value"]), match["unit"])


def format_number(value: float) -> str:
    """``500.0`` → ``500``; ``0.25`` → ``0.25`` (no float noise)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"
