"""Laboratory results (category ``laboratory``): which code, value, unit, range and flag a result carries.

A laboratory Observation is one test of the LOINC laboratory catalogue
(:mod:`expediente.loinc`): a panel that is only ordered (``ORDER_OBS = Order``) is not a result;
its tests are, grouped by a ``DiagnosticReport``. The value is what the laboratory reported:

- ``valueQuantity`` in UCUM (``http://unitsofmeasure.org``) with a numeric value, optionally with a
  comparator (``<0.5``);
- ``valueString`` (a text result), ``valueCodeableConcept`` (a coded result, e.g. an organism), or
- ``dataAbsentReason`` when there is no value (hemolysed sample, ...).

The reference range (``referenceRange[0].low/high``) is the laboratory's; its unit must be the
value's. The interpretation (``Observation.interpretation``, v3 ObservationInterpretation) is
decided here from the value and that range — ``L``/``H``/``N`` — unless the laboratory sent one.
Critical flags (``LL``/``HH``) come from the tenant's critical limits (:mod:`.critical`), which
override a milder flag. Nothing here stores anything; :func:`normalize` raises
:class:`~expediente.errors.Invalid` (400) naming the element that is wrong.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from expediente import loinc
from expediente.errors import Invalid

from .vital_signs import LOINC, UCUM, loinc_code

CATEGORY = "laboratory"
CATEGORY_DISPLAY = "Laboratory"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
INTERPRETATIONS = {"LL": "Critical low", "L": "Low", "N": "Normal", "H": "High", "HH": "Critical high",
                   "A": "Abnormal", "AA": "Critical abnormal", "POS": "Positive", "NEG": "Negative",
                   "IND": "Indeterminate", "<": "Off scale low", ">": "Off scale high"}
CRITICAL = frozenset({"LL", "HH", "AA"})
# How the orders domain writes a ServiceRequest (functions/orders/logic.py), read here to check that a
# result answers a laboratory order of its patient that was not cancelled.
_ORDERS_EXT = "https://expediente.mx/fhir/StructureDefinition"
ORDER_STATUS = f"{_ORDERS_EXT}/estado-orden"
ORDER_CLINIC = f"{_ORDERS_EXT}/clues"
LAB_ORDER_CATEGORY = ("http://snomed.info/sct", "108252007")
_VALUES = ("valueQuantity", "valueString", "valueCodeableConcept")
_COMPARATORS = frozenset({"<", "<=", ">=", ">"})


@cache
def codes() -> frozenset[str]:
    """The codes this category records (to infer it when the client names no category); read on first use."""
    return frozenset(t.code for t in loinc.catalogue() if not t.panel)


def _number(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise Invalid(f"{where} must be a number", expression=where)
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:  # pragma: no cover - str() of a float is always a number
        raise Invalid(f"{where} must be a number", expression=where) from exc
    if not number.is_finite():
        raise Invalid(f"{where} must be a finite number", expression=where)
    return number


def _unit(quantity: dict[str, Any], where: str) -> str:
    if quantity.get("system", UCUM) != UCUM:
        raise Invalid(f"{where}.system must be {UCUM}", expression=f"{where}.system")
    code = quantity.get("code")
    if not isinstance(code, str) or not code.strip() or any(c.isspace() for c in code):
        raise Invalid(f"{where}.code must be the UCUM unit code (e.g. mmol/L)", expression=f"{where}.code")
    return code


def _quantity(quantity: Any, where: str) -> dict[str, Any]:
    if not isinstance(quantity, dict):
        raise Invalid(f"{where} must be a Quantity", expression=where)
    _number(quantity.get("value"), f"{where}.value")
    unit = _unit(quantity, where)
    comparator = quantity.get("comparator")
    if comparator is not None and comparator not in _COMPARATORS:
        raise Invalid(f"{where}.comparator must be one of {', '.join(sorted(_COMPARATORS))}",
                      expression=f"{where}.comparator")
    return {**quantity, "system": UCUM, "code": unit, "unit": quantity.get("unit") or unit}


def _ranges(resource: dict[str, Any], unit: str | None) -> None:
    for i, band in enumerate(resource.get("referenceRange") or []):
        where = f"Observation.referenceRange[{i}]"
        low, high = band.get("low"), band.get("high")
        if low is None and high is None and not band.get("text"):
            raise Invalid(f"{where} needs low, high or text", expression=where)
        bounds = []
        for name, bound in (("low", low), ("high", high)):
            if bound is None:
                continue
            quantity = _quantity(bound, f"{where}.{name}")
            if unit is not None and quantity["code"] != unit:
                raise Invalid(f"{where}.{name} is in {quantity['code']!r} but the value is in {unit!r}",
                              expression=f"{where}.{name}.code")
            band[name] = quantity
            bounds.append(_number(quantity["value"], f"{where}.{name}.value"))
        if len(bounds) == 2 and bounds[0] > bounds[1]:
            raise Invalid(f"{where}.low is above {where}.high", expression=f"{where}.low")


def is_lab_order(order: dict[str, Any]) -> bool:
    return any((c.get("system"), c.get("code")) == LAB_ORDER_CATEGORY
               for concept in order.get("category") or [] for c in concept.get("coding") or [])


def order_status(order: dict[str, Any]) -> str:
    return str(next((e.get("valueCode") for e in order.get("extension") or [] if e.get("url") == ORDER_STATUS), ""))


def order_clinic(order: dict[str, Any]) -> str | None:
    """The CLUES of the clinic that placed the order, if recorded."""
    clues = next((e.get("valueString") for e in order.get("extension") or [] if e.get("url") == ORDER_CLINIC), None)
    return str(clues) if clues else None


def order_code(order: dict[str, Any]) -> str:
    return str(next((c.get("code") for c in (order.get("code") or {}).get("coding") or []
                     if c.get("system") == LOINC), ""))


def code_of(resource: dict[str, Any]) -> str:
    """The LOINC code of a normalized Observation (its first coding)."""
    return str(resource["code"]["coding"][0]["code"])


def value_of(resource: dict[str, Any]) -> tuple[Decimal, str] | None:
    """The numeric value and UCUM unit of a result (None for text, coded or absent values, or a ``<x``)."""
    quantity = resource.get("valueQuantity")
    if not quantity or quantity.get("comparator"):
        return None
    return Decimal(str(quantity["value"])), str(quantity["code"])


def range_flag(resource: dict[str, Any]) -> str | None:
    """``L``, ``H`` or ``N`` from the value and the first reference range; None when it cannot be judged."""
    value = value_of(resource)
    bands = resource.get("referenceRange") or []
    if value is None or not bands:
        return None
    number, _ = value
    low, high = bands[0].get("low"), bands[0].get("high")
    if low is not None and number < Decimal(str(low["value"])):
        return "L"
    if high is not None and number > Decimal(str(high["value"])):
        return "H"
    return "N" if low is not None or high is not None else None


def interpretation_code(resource: dict[str, Any]) -> str | None:
    """The first v3 interpretation code of a result, if any."""
    for concept in resource.get("interpretation") or []:
        for coding in concept.get("coding") or []:
            if coding.get("system") == INTERPRETATION:
                return str(coding.get("code"))
    return None


def interpretation(code: str) -> list[dict[str, Any]]:
    """The ``Observation.interpretation`` element for a v3 code."""
    return [{"coding": [{"system": INTERPRETATION, "code": code, "display": INTERPRETATIONS[code]}],
             "text": INTERPRETATIONS[code]}]


def normalize(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` with its LOINC code, value, reference range and sent interpretation checked.

    Raises :class:`Invalid` (400) naming the element: a code outside the catalogue or a panel, no
    value and no ``dataAbsentReason``, two kinds of value, a value that is not a number or whose
    unit is not a UCUM code, a range in another unit or upside down, an unknown interpretation code.
    """
    code, index = loinc_code(resource.get("code"), "Observation.code")
    test = loinc.lab_test(code, where=f"Observation.code.coding[{index}].code")
    if test.panel:
        raise Invalid(f"LOINC {test.code} ({test.name}) is a panel that is only ordered: report each of its "
                      "tests as an Observation and group them with a DiagnosticReport",
                      expression=f"Observation.code.coding[{index}].code")
    if resource.get("component"):
        raise Invalid("A laboratory result carries one value; report each test as its own Observation",
                      expression="Observation.component")
    given = [e for e in _VALUES if e in resource]
    others = sorted(e for e in resource if e.startswith("value") and e not in _VALUES)
    if others:
        raise Invalid(f"Observation.{others[0]} is not accepted: a laboratory result is a valueQuantity, "
                      "valueString or valueCodeableConcept", expression=f"Observation.{others[0]}")
    if len(given) > 1:
        raise Invalid(f"Observation has both {given[0]} and {given[1]}: one value only",
                      expression=f"Observation.{given[1]}")
    if not given and not resource.get("dataAbsentReason"):
        raise Invalid("Observation.value[x] is required (or dataAbsentReason saying why there is none)",
                      expression="Observation.value[x]")
    if given and resource.get("dataAbsentReason"):
        raise Invalid("Observation.dataAbsentReason is only for a result without a value",
                      expression="Observation.dataAbsentReason")
    out = dict(resource)
    others_codings = [c for c in resource["code"].get("coding") or [] if c.get("system") != LOINC]
    out["code"] = {**resource["code"], "coding": [test.coding(), *others_codings]}
    out["code"].setdefault("text", test.display)
    unit = None
    if "valueQuantity" in out:
        out["valueQuantity"] = _quantity(out["valueQuantity"], "Observation.valueQuantity")
        unit = out["valueQuantity"]["code"]
    if "valueString" in out and not str(out["valueString"]).strip():
        raise Invalid("Observation.valueString is empty", expression="Observation.valueString")
    out["referenceRange"] = [dict(band) for band in out.get("referenceRange") or []]
    if not out["referenceRange"]:
        del out["referenceRange"]
    _ranges(out, unit)
    sent = interpretation_code(out)
    if sent is not None and sent not in INTERPRETATIONS:
        raise Invalid(f"Observation.interpretation {sent!r} is not a v3 ObservationInterpretation code used here "
                      f"({', '.join(INTERPRETATIONS)})", expression="Observation.interpretation")
    return out
