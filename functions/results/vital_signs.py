"""Vital-signs rules: which LOINC codes, which UCUM units and which values a vital sign may carry.

The catalogue is the NOM-004 vital-signs set (the ``signos-vitales`` section of the notes)
coded as in the FHIR R4 vital-signs profiles: one LOINC code per Observation, a
``valueQuantity`` in UCUM (``http://unitsofmeasure.org``), and the blood pressure as one panel
(85354-9) holding systolic (8480-6) and diastolic (8462-4) as components. Nothing outside the
catalogue is accepted: a new vital sign is a new :data:`MEASURES` entry, never a guessed code.

The plausible ranges reject typing errors (37.5 entered as 375) rather than judge the patient:
every value a living patient can present lies inside them. They are data, so a reviewer can
read and change them without reading code.

Pure domain code: :func:`normalize` checks and completes the ``code``, ``valueQuantity`` and
``component`` of an Observation body and raises :class:`~expediente.errors.Invalid` (400) naming
the element that is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from expediente.errors import Invalid

CATEGORY = "vital-signs"
CATEGORY_DISPLAY = "Vital Signs"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True)
class Measure:
    """One quantity: its LOINC code and long common name, its UCUM unit and plausible range (inclusive)."""

    code: str
    display: str
    unit: str  # UCUM code: the only unit accepted (no conversion: a wrong unit is a wrong value)
    unit_display: str
    low: float
    high: float


@dataclass(frozen=True)
class Panel:
    """A vital sign recorded as components (blood pressure): each component is required, once."""

    code: str
    display: str
    components: tuple[str, ...]


TEMPERATURE = Measure("8310-5", "Body temperature", "Cel", "°C", 25, 45)
HEART_RATE = Measure("8867-4", "Heart rate", "/min", "beats/minute", 20, 300)
RESPIRATORY_RATE = Measure("9279-1", "Respiratory rate", "/min", "breaths/minute", 4, 80)
SYSTOLIC = Measure("8480-6", "Systolic blood pressure", "mm[Hg]", "mmHg", 40, 300)
DIASTOLIC = Measure("8462-4", "Diastolic blood pressure", "mm[Hg]", "mmHg", 20, 200)
WEIGHT = Measure("29463-7", "Body weight", "kg", "kg", 0.3, 500)
HEIGHT = Measure("8302-2", "Body height", "cm", "cm", 20, 260)
BMI = Measure("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", "kg/m2", 5, 100)
OXYGEN_SATURATION = Measure("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "%", 50, 100)
BLOOD_PRESSURE = Panel("85354-9", "Blood pressure panel with all children optional", (SYSTOLIC.code, DIASTOLIC.code))

# Observations that stand alone (valueQuantity); systolic and diastolic exist only inside the panel.
MEASURES: dict[str, Measure] = {m.code: m for m in (TEMPERATURE, HEART_RATE, RESPIRATORY_RATE, WEIGHT, HEIGHT,
                                                    BMI, OXYGEN_SATURATION)}
PANELS: dict[str, Panel] = {BLOOD_PRESSURE.code: BLOOD_PRESSURE}
COMPONENTS: dict[str, Measure] = {m.code: m for m in (SYSTOLIC, DIASTOLIC)}
CODES = frozenset(MEASURES) | frozenset(PANELS)


def _catalogue() -> str:
    return ", ".join(f"{m.code} ({m.display.lower()})" for m in MEASURES.values()) + \
        f", {BLOOD_PRESSURE.code} (blood pressure panel)"


def loinc_code(concept: dict[str, Any] | None, where: str) -> tuple[str, int]:
    """The one LOINC code of ``concept`` and its coding index; 400 naming ``where`` otherwise."""
    codings = [(i, c) for i, c in enumerate((concept or {}).get("coding") or []) if c.get("system") == LOINC]
    if not codings:
        raise Invalid(f"{where} needs a LOINC coding (system {LOINC})", expression=where)
    if len(codings) > 1:
        raise Invalid(f"{where} has exactly one LOINC coding", expression=f"{where}.coding[{codings[1][0]}]")
    index, coding = codings[0]
    return str(coding.get("code") or ""), index


def _coded(concept: dict[str, Any], code: str, display: str) -> dict[str, Any]:
    """``concept`` with its LOINC coding first and canonical; codings of other systems are kept."""
    others = [c for c in concept.get("coding") or [] if c.get("system") != LOINC]
    coded: dict[str, Any] = {**concept, "coding": [{"system": LOINC, "code": code, "display": display}, *others]}
    coded.setdefault("text", display)
    return coded


def _quantity(quantity: Any, measure: Measure, where: str) -> dict[str, Any]:
    """A ``Quantity`` in the measure's UCUM unit with a plausible value; 400 naming the element."""
    if not isinstance(quantity, dict):
        raise Invalid(f"{where} is required: {measure.display} in {measure.unit} (UCUM)", expression=where)
    if quantity.get("system", UCUM) != UCUM:
        raise Invalid(f"{where}.system must be {UCUM}", expression=f"{where}.system")
    if quantity.get("code") != measure.unit:
        raise Invalid(f"{where}.code must be the UCUM unit {measure.unit!r} for {measure.display}, not "
                      f"{quantity.get('code')!r}", expression=f"{where}.code")
    if "comparator" in quantity:
        raise Invalid(f"{where}.comparator is not allowed: a vital sign is a measured value",
                      expression=f"{where}.comparator")
    value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"{where}.value must be a number", expression=f"{where}.value")
    if not measure.low <= value <= measure.high:
        raise Invalid(f"{where}.value {value} {measure.unit} is outside the plausible range for {measure.display} "
                      f"({measure.low:g}–{measure.high:g} {measure.unit})", expression=f"{where}.value")
    return {**quantity, "value": value, "unit": measure.unit_display, "system": UCUM, "code": measure.unit}


def _no_value(resource: dict[str, Any], code: str) -> None:
    for element in resource:
        if element.startswith("value") or element == "dataAbsentReason":
            raise Invalid(f"Observation {code} (a panel) carries its values in component, not {element}",
                          expression=f"Observation.{element}")


def _single_value(resource: dict[str, Any], measure: Measure) -> None:
    if "dataAbsentReason" in resource:
        raise Invalid("A vital sign records a measured value: Observation.dataAbsentReason is not accepted",
                      expression="Observation.dataAbsentReason")
    others = sorted(e for e in resource if e.startswith("value") and e != "valueQuantity")
    if others:
        raise Invalid(f"Observation.{others[0]} is not accepted: {measure.display} is a valueQuantity",
                      expression=f"Observation.{others[0]}")
    if resource.get("component"):
        raise Invalid(f"{measure.display} has no components", expression="Observation.component")


def _panel(resource: dict[str, Any], panel: Panel) -> list[dict[str, Any]]:
    """Each component of the panel once, checked; diastolic below systolic (400 naming the component)."""
    _no_value(resource, panel.code)
    components = resource.get("component") or []
    values: dict[str, tuple[int, float]] = {}
    checked: list[dict[str, Any]] = []
    for index, component in enumerate(components):
        where = f"Observation.component[{index}]"
        code, _ = loinc_code(component.get("code"), f"{where}.code")
        measure = COMPONENTS.get(code)
        if measure is None or code not in panel.components:
            raise Invalid(f"{where}.code {code!r} is not a component of {panel.display} (expected "
                          f"{' and '.join(panel.components)})", expression=f"{where}.code")
        if code in values:
            raise Invalid(f"{where}: {measure.display} is already given in component[{values[code][0]}]",
                          expression=f"{where}.code")
        others = sorted(e for e in component if e.startswith("value") and e != "valueQuantity")
        if others or "dataAbsentReason" in component:
            element = others[0] if others else "dataAbsentReason"
            raise Invalid(f"{where}.{element} is not accepted: {measure.display} is a valueQuantity",
                          expression=f"{where}.{element}")
        quantity = _quantity(component.get("valueQuantity"), measure, f"{where}.valueQuantity")
        values[code] = (index, float(quantity["value"]))
        checked.append({**component, "code": _coded(component["code"], code, measure.display),
                        "valueQuantity": quantity})
    missing = [COMPONENTS[c].display.lower() for c in panel.components if c not in values]
    if missing:
        raise Invalid(f"{panel.display} needs both components: {' and '.join(missing)} missing",
                      expression="Observation.component")
    (_, systolic), (index, diastolic) = values[SYSTOLIC.code], values[DIASTOLIC.code]
    if diastolic >= systolic:
        raise Invalid(f"Diastolic pressure ({diastolic:g} mm[Hg]) must be below systolic ({systolic:g} mm[Hg])",
                      expression=f"Observation.component[{index}].valueQuantity.value")
    return checked


def normalize(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` with its vital-sign ``code`` and value checked and written canonically.

    Raises :class:`Invalid` (400) naming the element: a code outside the catalogue, systolic or
    diastolic outside the panel, a unit other than the code's UCUM unit, a value outside its
    plausible range, a panel without both components or with diastolic not below systolic.
    """
    code, index = loinc_code(resource.get("code"), "Observation.code")
    if code in COMPONENTS:
        raise Invalid(f"{COMPONENTS[code].display} ({code}) is recorded as a component of the blood pressure "
                      f"panel {BLOOD_PRESSURE.code}, with both systolic and diastolic",
                      expression=f"Observation.code.coding[{index}].code")
    panel = PANELS.get(code)
    if panel is not None:
        return {**resource, "code": _coded(resource["code"], code, panel.display),
                "component": _panel(resource, panel)}
    measure = MEASURES.get(code)
    if measure is None:
        raise Invalid(f"LOINC {code!r} is not a vital sign recorded here; the vital signs are: {_catalogue()}",
                      expression=f"Observation.code.coding[{index}].code")
    _single_value(resource, measure)
    return {**resource, "code": _coded(resource["code"], code, measure.display),
            "valueQuantity": _quantity(resource.get("valueQuantity"), measure, "Observation.valueQuantity")}
