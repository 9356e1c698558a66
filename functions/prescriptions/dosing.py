"""A complete dosage: dose with its UCUM unit, route, frequency, duration and quantity, checked against the item.

NOM-024 and the Reglamento de Insumos para la Salud (art. 30) ask for dose, presentation, route,
frequency and duration on every prescription. Anything missing or inconsistent with the formulary
item (a route its form does not allow, a dose unit that does not match its strength, no duration)
is refused with a 400 naming the element.

One ``dosageInstruction`` per prescription: a regimen that changes (a taper) is written as
several prescriptions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from expediente.errors import Invalid

from . import units
from .formulary import SNOMED, Item, routes
from .units import UCUM, Quantity

MR = "MedicationRequest"
DOSAGE = f"{MR}.dosageInstruction[0]"
_DAYS = {"h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.0}
_DURATION_DAYS = {"d": 1.0, "wk": 7.0, "mo": 30.0}
PACKAGE = "{package}"
MAX_DURATION_DAYS = 366


@dataclass(frozen=True)
class Dosage:
    dose: Quantity
    per_dose: dict[str, Quantity]       # amount of each ingredient (by INN) in one dose
    doses_per_day: float
    route: str                          # SNOMED CT code
    duration_days: float
    quantity: Quantity                  # what the pharmacy hands over: {package} or presentation units
    repeats: int                        # dispensations after the first
    as_needed: bool
    frequency_text: str
    duration_text: str

    @property
    def daily(self) -> dict[str, Quantity]:
        """Amount of each ingredient per day at the prescribed (or maximum as-needed) rate."""
        return {inn: Quantity(q.value * self.doses_per_day, q.unit) for inn, q in self.per_dose.items()}

    def packages(self, item: Item) -> int | None:
        """How many packages the quantity is (rounded up), or None when the item's package is unknown."""
        if self.quantity.unit == PACKAGE:
            return math.ceil(self.quantity.value)
        if item.package is None:
            return None
        if self.quantity.unit == item.presentation_unit and units.kind(item.package.unit) != "count":
            return math.ceil(self.quantity.value)  # one bottle (or tube) of liquid is one package
        size = item.package.value if item.package.unit == self.quantity.unit else None
        if size is None:
            converted = self.quantity.to(item.package.unit)
            return None if converted is None else math.ceil(converted.value / item.package.value - 1e-9)
        return math.ceil(self.quantity.value / size - 1e-9)


def _number(value: Any, where: str, *, positive: bool = True, integer: bool = False) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or (positive and value <= 0):
        kind = "a positive integer" if integer else "a positive number"
        raise Invalid(f"{where} must be {kind}", expression=where)
    if integer and int(value) != value:
        raise Invalid(f"{where} must be a whole number", expression=where)
    return float(value)


def _ucum(value: Any, where: str) -> Quantity:
    if not isinstance(value, dict):
        raise Invalid(f"{where} is required", expression=where)
    number = _number(value.get("value"), f"{where}.value")
    code = value.get("code")
    if value.get("system") != UCUM or not isinstance(code, str) or not units.known_unit(code):
        raise Invalid(f"{where} needs system {UCUM} and a UCUM code (mg, g, ug, mL, [iU] or a unit such as "
                      "{tablet})", expression=f"{where}.code")
    return Quantity(number, code)


def per_dose(item: Item, dose: Quantity) -> dict[str, Quantity]:
    """The amount of each ingredient in one ``dose``; 400 when the unit does not fit the item's strength."""
    where = f"{DOSAGE}.doseAndRate[0].doseQuantity.code"
    dose_kind = units.kind(dose.unit)
    if dose.unit == item.presentation_unit and item.per is None:
        return {i.inn: Quantity(i.strength.value * dose.value, i.strength.unit) for i in item.ingredients}
    if item.per is not None and dose_kind == units.kind(item.per.unit) and dose_kind != "count":
        ratio = (dose.to(item.per.unit) or dose).value / item.per.value
        return {i.inn: Quantity(i.strength.value * ratio, i.strength.unit) for i in item.ingredients}
    if len(item.ingredients) == 1:
        strength = item.ingredients[0].strength
        converted = dose.to(strength.unit)
        if converted is not None:
            return {item.ingredients[0].inn: converted}
    accepted = [item.presentation_unit] if item.per is None else [item.per.unit]
    if len(item.ingredients) == 1:
        accepted.append(item.ingredients[0].strength.unit)
    raise Invalid(f"The dose unit {dose.unit} does not match {item.label}: use {' or '.join(accepted)}",
                  expression=where)


def _doses_per_day(repeat: Mapping[str, Any]) -> tuple[float, str]:
    where = f"{DOSAGE}.timing.repeat"
    frequency = _number(repeat.get("frequency"), f"{where}.frequency", integer=True)
    period = _number(repeat.get("period"), f"{where}.period")
    unit = repeat.get("periodUnit")
    if unit not in _DAYS:
        raise Invalid(f"{where}.periodUnit must be h, d, wk or mo", expression=f"{where}.periodUnit")
    per_day = frequency / (period * _DAYS[str(unit)])
    names = {"h": "horas", "d": "días", "wk": "semanas", "mo": "meses"}
    if frequency == 1:
        text = f"cada {units.format_number(period)} {names[str(unit)]}" if period != 1 else \
            {"h": "cada hora", "d": "una vez al día", "wk": "una vez por semana", "mo": "una vez al mes"}[str(unit)]
    elif period == 1:
        per_unit = {"h": "por hora", "d": "al día", "wk": "por semana", "mo": "al mes"}[str(unit)]
        text = f"{int(frequency)} veces {per_unit}"
    else:
        text = f"{int(frequency)} veces cada {units.format_number(period)} {names[str(unit)]}"
    return per_day, text


def parse(resource: Mapping[str, Any], item: Item) -> Dosage:
    """The dosage of a prescription for ``item``; :class:`Invalid` naming the first problem."""
    instructions = resource.get("dosageInstruction")
    if not isinstance(instructions, list) or not instructions:
        raise Invalid(f"{MR}.dosageInstruction is required (dose, route, frequency and duration)",
                      expression=f"{MR}.dosageInstruction")
    if len(instructions) > 1:
        raise Invalid("One dosageInstruction per prescription: write a changing regimen as several prescriptions",
                      expression=f"{MR}.dosageInstruction")
    dosage = instructions[0]
    if not isinstance(dosage, dict):
        raise Invalid(f"{DOSAGE} must be an object", expression=DOSAGE)
    rates = dosage.get("doseAndRate") or []
    dose = _ucum((rates[0] if rates and isinstance(rates[0], dict) else {}).get("doseQuantity"),
                 f"{DOSAGE}.doseAndRate[0].doseQuantity")
    amounts = per_dose(item, dose)
    route_codes = [c.get("code") for c in (dosage.get("route") or {}).get("coding") or []
                   if isinstance(c, dict) and c.get("system") == SNOMED]
    if not route_codes:
        raise Invalid(f"{DOSAGE}.route is required (a SNOMED CT route code)", expression=f"{DOSAGE}.route")
    route = str(route_codes[0])
    if not item.routes:
        raise Invalid(f"{item.label} has no route of administration in the formulary (no source gives one): "
                      "the pharmacy or administrator must set its routes as a local item",
                      expression=f"{DOSAGE}.route")
    if route not in item.routes:
        allowed = ", ".join(f"{c} ({routes()[c].display})" if c in routes() else c for c in item.routes)
        raise Invalid(f"Route {route} is not allowed for {item.form} ({item.label}); allowed: {allowed}",
                      expression=f"{DOSAGE}.route")
    timing = dosage.get("timing") or {}
    repeat = timing.get("repeat") if isinstance(timing, dict) else None
    if not isinstance(repeat, dict):
        raise Invalid(f"{DOSAGE}.timing.repeat is required (frequency, period, periodUnit and boundsDuration)",
                      expression=f"{DOSAGE}.timing")
    per_day, frequency_text = _doses_per_day(repeat)
    as_needed = bool(dosage.get("asNeededBoolean")) or "asNeededCodeableConcept" in dosage
    ceiling = dosage.get("maxDosePerPeriod")
    if ceiling is not None:
        if not isinstance(ceiling, dict):
            raise Invalid(f"{DOSAGE}.maxDosePerPeriod must be a Ratio", expression=f"{DOSAGE}.maxDosePerPeriod")
        limit = _ucum(ceiling.get("numerator"), f"{DOSAGE}.maxDosePerPeriod.numerator")
        span = ceiling.get("denominator") or {}
        where = f"{DOSAGE}.maxDosePerPeriod.denominator"
        span_value = _number(span.get("value") if isinstance(span, dict) else None, f"{where}.value")
        span_unit = span.get("code") if isinstance(span, dict) else None
        if span_unit not in _DAYS or (isinstance(span, dict) and span.get("system") not in (None, UCUM)):
            raise Invalid(f"{where} must be a time in h, d, wk or mo", expression=where)
        ceiling_doses = (limit.to(dose.unit) or _mismatch(limit.unit, dose.unit)).value / dose.value
        per_day = max(per_day, ceiling_doses / (span_value * _DAYS[str(span_unit)]))
    bounds = repeat.get("boundsDuration")
    if not isinstance(bounds, dict):
        raise Invalid(f"{DOSAGE}.timing.repeat.boundsDuration (the duration of treatment) is required",
                      expression=f"{DOSAGE}.timing.repeat.boundsDuration")
    duration_value = _number(bounds.get("value"), f"{DOSAGE}.timing.repeat.boundsDuration.value")
    duration_unit = bounds.get("code") or bounds.get("unit")
    if bounds.get("system") not in (None, UCUM) or duration_unit not in _DURATION_DAYS:
        raise Invalid(f"{DOSAGE}.timing.repeat.boundsDuration must be in d, wk or mo",
                      expression=f"{DOSAGE}.timing.repeat.boundsDuration")
    days = duration_value * _DURATION_DAYS[str(duration_unit)]
    if days > MAX_DURATION_DAYS:
        raise Invalid(f"A prescription lasts at most {MAX_DURATION_DAYS} days; renew it after",
                      expression=f"{DOSAGE}.timing.repeat.boundsDuration")
    dispense = resource.get("dispenseRequest") or {}
    quantity = _ucum(dispense.get("quantity") if isinstance(dispense, dict) else None,
                     f"{MR}.dispenseRequest.quantity")
    by_volume = item.package is not None and quantity.to(item.package.unit) is not None
    if quantity.unit not in (PACKAGE, item.presentation_unit) and not by_volume:
        raise Invalid(f"{MR}.dispenseRequest.quantity is counted in {PACKAGE} (packages) or "
                      f"{item.presentation_unit}", expression=f"{MR}.dispenseRequest.quantity.code")
    repeats_raw = dispense.get("numberOfRepeatsAllowed", 0) if isinstance(dispense, dict) else 0
    if not isinstance(repeats_raw, int) or isinstance(repeats_raw, bool) or repeats_raw < 0:
        raise Invalid(f"{MR}.dispenseRequest.numberOfRepeatsAllowed must be 0 or more",
                      expression=f"{MR}.dispenseRequest.numberOfRepeatsAllowed")
    duration_names = {"d": "días", "wk": "semanas", "mo": "meses"}
    return Dosage(dose=dose, per_dose=amounts, doses_per_day=per_day, route=route, duration_days=days,
                  quantity=quantity, repeats=repeats_raw, as_needed=as_needed, frequency_text=frequency_text,
                  duration_text=f"{units.format_number(duration_value)} {duration_names[str(duration_unit)]}")


def _mismatch(unit: str, dose_unit: str) -> Quantity:
    raise Invalid(f"{DOSAGE}.maxDosePerPeriod is in {unit}, the dose in {dose_unit}: use the same unit",
                  expression=f"{DOSAGE}.maxDosePerPeriod.numerator")
