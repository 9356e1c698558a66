"""UCUM quantities and the complete dosage of a MedicationRequest, checked against its formulary item."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from expediente.errors import Invalid
from functions.prescriptions import dosing, units
from functions.prescriptions.formulary import catalogue
from functions.prescriptions.units import Quantity

UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
CNIS = "urn:oid:2.16.840.1.113883.3.215.12.8"
ORAL = "26643006"
RECTAL = "37161004"
PARACETAMOL = "010.000.0104.00"        # tableta 500 mg, envase con 10
METRONIDAZOLE_SUSP = "010.000.1310.00"  # suspensión oral 250 mg/5 mL, envase 120 mL
TMP_SMX = "010.000.1903.00"            # trimetoprima/sulfametoxazol tableta 80 mg + 400 mg, envase con 20
TMP_SMX_SUSP = "010.000.1904.00"       # 40 mg + 200 mg /5 mL
DIPHENHYDRAMINE_INJ = "010.000.0406.00"  # solución inyectable: no route in the catalogue
DOSAGE = "MedicationRequest.dosageInstruction[0]"

def prescription(key: str = PARACETAMOL, *, dose: float = 1, dose_unit: str = "{tablet}", frequency: int = 1,
                 period: float = 8, period_unit: str = "h", days: float = 5, duration_unit: str = "d",
                 quantity: float = 2, quantity_unit: str = "{package}", route: str = ORAL,
                 **extra: Any) -> dict[str, Any]:
    """A draft MedicationRequest shaped as the API receives it."""
    return {
        "resourceType": "MedicationRequest", "status": "draft", "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {"coding": [{"system": CNIS, "code": key}]},
        "dosageInstruction": [{
            "doseAndRate": [{"doseQuantity": {"value": dose, "unit": dose_unit, "system": UCUM, "code": dose_unit}}],
            "route": {"coding": [{"system": SNOMED, "code": route}]},
            "timing": {"repeat": {"frequency": frequency, "period": period, "periodUnit": period_unit,
                                  "boundsDuration": {"value": days, "unit": duration_unit, "system": UCUM,
                                                     "code": duration_unit}}},
        }],
        "dispenseRequest": {"quantity": {"value": quantity, "unit": quantity_unit, "system": UCUM,
                                         "code": quantity_unit}},
        **extra,
    }


def parse(resource: dict[str, Any], key: str | None = None) -> dosing.Dosage:
    code = key or resource["medicationCodeableConcept"]["coding"][0]["code"]
    return dosing.parse(resource, catalogue()[code])


def refused(resource: dict[str, Any], key: str | None = None) -> str | None:
    with pytest.raises(Invalid) as raised:
        parse(resource, key)
    return raised.value.expression


def instruction(resource: dict[str, Any]) -> dict[str, Any]:
    return dict(resource["dosageInstruction"][0])


# ---------------------------------------------------------------- units ---


@pytest.mark.parametrize(("amount", "unit", "expected"), [
    (Quantity(500, "mg"), "g", 0.5),
    (Quantity(2, "g"), "mg", 2000),
    (Quantity(250, "ug"), "mg", 0.25),
    (Quantity(1, "g"), "ug", 1_000_000),
    (Quantity(5, "mL"), "L", 0.005),
    (Quantity(1.5, "L"), "mL", 1500),
    (Quantity(2, "k[iU]"), "[iU]", 2000),
    (Quantity(1000, "[IU]"), "[iU]", 1000),
])
def test_quantities_convert_within_their_kind(amount: Quantity, unit: str, expected: float) -> None:
    converted = amount.to(unit)
    assert converted is not None
    assert converted.unit == unit
    assert converted.value == pytest.approx(expected)


@pytest.mark.parametrize(("amount", "unit"), [
    (Quantity(500, "mg"), "mL"),
    (Quantity(5, "mL"), "mg"),
    (Quantity(1, "{tablet}"), "mg"),
    (Quantity(1, "{tablet}"), "{capsule}"),
    (Quantity(1, "mg"), "{tablet}"),
    (Quantity(1, "[iU]"), "mg"),
    (Quantity(1, "mg"), "kg"),
])
def test_quantities_of_different_kinds_or_count_units_do_not_convert(amount: Quantity, unit: str) -> None:
    assert amount.to(unit) is None


def test_same_unit_conversion_is_identity() -> None:
    assert Quantity(3, "{tablet}").to("{tablet}") == Quantity(3, "{tablet}")


@pytest.mark.parametrize(("unit", "kind"), [
    ("mg", "mass"), ("mL", "volume"), ("[iU]", "iu"), ("meq", "equivalents"), ("mmol", "amount"),
    ("{tablet}", "count"), ("{bottle}", "count"), ("{package}", "count"),
    ("tablet", None), ("{Tablet}", None), ("kg", None), ("", None),
])
def test_unit_kind(unit: str, kind: str | None) -> None:
    assert units.kind(unit) == kind
    assert units.known_unit(unit) is (kind is not None)


def test_parse_reads_value_and_unit() -> None:
    assert units.parse("500 mg") == Quantity(500, "mg")
    assert units.parse(" 2.5 mL ") == Quantity(2.5, "mL")
    assert units.parse("20 {tablet}") == Quantity(20, "{tablet}")
    assert units.parse("   ") is None


@pytest.mark.parametrize("text", ["500mg", "500", "mg", "500 miligramos", "-5 mg", "1e3 mg", "4,000 [iU]",
                                  "5 mg extra", ".5 mg"])
def test_parse_refuses_what_is_not_a_known_quantity(text: str) -> None:
    with pytest.raises(ValueError, match="UCUM"):
        units.parse(text)


@pytest.mark.parametrize(("value", "text"), [(500.0, "500"), (0.25, "0.25"), (1 / 3, "0.333333"), (0.0, "0"),
                                             (2.50, "2.5")])
def test_format_number_has_no_float_noise(value: float, text: str) -> None:
    assert units.format_number(value) == text
    assert str(Quantity(value, "mg")) == f"{text} mg"


# ---------------------------------------------------------------- dose ---


def test_tablet_dose_gives_the_amount_per_dose_and_per_day() -> None:
    dosage = parse(prescription(dose=2))
    assert dosage.per_dose == {"paracetamol": Quantity(1000, "mg")}
    assert dosage.doses_per_day == pytest.approx(3)
    assert dosage.daily == {"paracetamol": Quantity(3000, "mg")}
    assert dosage.route == ORAL
    assert dosage.as_needed is False


@pytest.mark.parametrize(("dose", "unit", "mg"), [(500, "mg", 500), (1, "g", 1000), (250_000, "ug", 250)])
def test_mass_dose_of_a_single_ingredient_tablet_is_accepted(dose: float, unit: str, mg: float) -> None:
    dosage = parse(prescription(dose=dose, dose_unit=unit))
    amount = dosage.per_dose["paracetamol"].to("mg")
    assert amount is not None
    assert amount.value == pytest.approx(mg)


@pytest.mark.parametrize(("dose", "unit", "mg"), [(5, "mL", 250), (10, "mL", 500), (2.5, "mL", 125),
                                                  (0.01, "L", 500), (500, "mg", 500)])
def test_liquid_dose_is_read_against_its_strength_per_5_ml(dose: float, unit: str, mg: float) -> None:
    item = catalogue()[METRONIDAZOLE_SUSP]
    assert item.per == Quantity(5, "mL")
    dosage = parse(prescription(METRONIDAZOLE_SUSP, dose=dose, dose_unit=unit, quantity=1))
    amount = dosage.per_dose["metronidazole"].to("mg")
    assert amount is not None
    assert amount.value == pytest.approx(mg)


def test_combination_tablet_dose_in_tablets_gives_every_ingredient() -> None:
    item = catalogue()[TMP_SMX]
    dosage = parse(prescription(TMP_SMX, dose=2, period=12))
    assert set(dosage.per_dose) == set(item.inns) == {"sulfamethoxazole", "trimethoprim"}
    expected = {i.inn: Quantity(i.strength.value * 2, i.strength.unit) for i in item.ingredients}
    assert dosage.per_dose == expected
    assert dosage.daily["sulfamethoxazole"].value == pytest.approx(expected["sulfamethoxazole"].value * 2)


def test_combination_liquid_dose_in_ml_gives_every_ingredient() -> None:
    dosage = parse(prescription(TMP_SMX_SUSP, dose=10, dose_unit="mL", period=12, quantity=1))
    assert dosage.per_dose["sulfamethoxazole"] == Quantity(400, "mg")
    assert dosage.per_dose["trimethoprim"] == Quantity(80, "mg")


@pytest.mark.parametrize(("key", "dose_unit"), [(TMP_SMX, "mg"), (TMP_SMX_SUSP, "mg"), (PARACETAMOL, "mL"),
                                                (PARACETAMOL, "{capsule}"), (METRONIDAZOLE_SUSP, "{tablet}"),
                                                (PARACETAMOL, "[iU]")])
def test_dose_unit_that_does_not_fit_the_item_is_refused(key: str, dose_unit: str) -> None:
    expression = refused(prescription(key, dose=400, dose_unit=dose_unit))
    assert expression == f"{DOSAGE}.doseAndRate[0].doseQuantity.code"


def test_dose_unit_refusal_says_which_units_fit() -> None:
    with pytest.raises(Invalid, match=r"\{tablet\}"):
        parse(prescription(TMP_SMX, dose=400, dose_unit="mg"))


# ---------------------------------------------------------------- refusals naming the element ---


def _no_instructions(r: dict[str, Any]) -> None:
    r.pop("dosageInstruction")


def _empty_instructions(r: dict[str, Any]) -> None:
    r["dosageInstruction"] = []


def _two_instructions(r: dict[str, Any]) -> None:
    r["dosageInstruction"].append(instruction(r))


def _instruction_not_object(r: dict[str, Any]) -> None:
    r["dosageInstruction"] = ["1 tableta cada 8 horas"]


def _no_dose(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0].pop("doseAndRate")


def _dose_zero(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = 0


def _dose_text(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = "1"


def _dose_bool(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = True


def _dose_without_system(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"].pop("system")


def _dose_unknown_unit(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["code"] = "tableta"


def _no_route(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0].pop("route")


def _route_not_snomed(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["route"]["coding"][0]["system"] = "http://example.org/routes"


def _route_not_allowed(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["route"]["coding"][0]["code"] = RECTAL


def _no_timing(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0].pop("timing")


def _no_repeat(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["timing"] = {"code": {"text": "TID"}}


def _no_frequency(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["timing"]["repeat"].pop("frequency")


def _fractional_frequency(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["timing"]["repeat"]["frequency"] = 1.5


def _zero_period(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["timing"]["repeat"]["period"] = 0


def _period_in_seconds(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["timing"]["repeat"]["periodUnit"] = "s"


def _no_duration(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["timing"]["repeat"].pop("boundsDuration")


def _negative_duration(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["timing"]["repeat"]["boundsDuration"]["value"] = -5


def _duration_in_hours(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["timing"]["repeat"]["boundsDuration"].update(unit="h", code="h")


def _duration_other_system(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["timing"]["repeat"]["boundsDuration"]["system"] = "http://example.org"


def _no_dispense(r: dict[str, Any]) -> None:
    r.pop("dispenseRequest")


def _quantity_in_mg(r: dict[str, Any]) -> None:
    r["dispenseRequest"]["quantity"].update(unit="mg", code="mg")


def _quantity_zero(r: dict[str, Any]) -> None:
    r["dispenseRequest"]["quantity"]["value"] = 0


def _quantity_in_capsules(r: dict[str, Any]) -> None:
    r["dispenseRequest"]["quantity"].update(unit="{capsule}", code="{capsule}")


def _negative_repeats(r: dict[str, Any]) -> None:
    r["dispenseRequest"]["numberOfRepeatsAllowed"] = -1


def _text_repeats(r: dict[str, Any]) -> None:
    r["dispenseRequest"]["numberOfRepeatsAllowed"] = "2"


def _ceiling_in_mass(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["maxDosePerPeriod"] = {
        "numerator": {"value": 3000, "unit": "mg", "system": UCUM, "code": "mg"},
        "denominator": {"value": 1, "unit": "d", "system": UCUM, "code": "d"}}


def _ceiling_per_tablet(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["maxDosePerPeriod"] = {
        "numerator": {"value": 4, "unit": "{tablet}", "system": UCUM, "code": "{tablet}"},
        "denominator": {"value": 1, "unit": "{tablet}", "system": UCUM, "code": "{tablet}"}}


def _ceiling_without_numerator(r: dict[str, Any]) -> None:
    r["dosageInstruction"][0]["maxDosePerPeriod"] = {
        "denominator": {"value": 1, "unit": "d", "system": UCUM, "code": "d"}}


@pytest.mark.parametrize(("breaks", "expression"), [
    (_no_instructions, "MedicationRequest.dosageInstruction"),
    (_empty_instructions, "MedicationRequest.dosageInstruction"),
    (_two_instructions, "MedicationRequest.dosageInstruction"),
    (_instruction_not_object, DOSAGE),
    (_no_dose, f"{DOSAGE}.doseAndRate[0].doseQuantity"),
    (_dose_zero, f"{DOSAGE}.doseAndRate[0].doseQuantity.value"),
    (_dose_text, f"{DOSAGE}.doseAndRate[0].doseQuantity.value"),
    (_dose_bool, f"{DOSAGE}.doseAndRate[0].doseQuantity.value"),
    (_dose_without_system, f"{DOSAGE}.doseAndRate[0].doseQuantity.code"),
    (_dose_unknown_unit, f"{DOSAGE}.doseAndRate[0].doseQuantity.code"),
    (_no_route, f"{DOSAGE}.route"),
    (_route_not_snomed, f"{DOSAGE}.route"),
    (_route_not_allowed, f"{DOSAGE}.route"),
    (_no_timing, f"{DOSAGE}.timing"),
    (_no_repeat, f"{DOSAGE}.timing"),
    (_no_frequency, f"{DOSAGE}.timing.repeat.frequency"),
    (_fractional_frequency, f"{DOSAGE}.timing.repeat.frequency"),
    (_zero_period, f"{DOSAGE}.timing.repeat.period"),
    (_period_in_seconds, f"{DOSAGE}.timing.repeat.periodUnit"),
    (_no_duration, f"{DOSAGE}.timing.repeat.boundsDuration"),
    (_negative_duration, f"{DOSAGE}.timing.repeat.boundsDuration.value"),
    (_duration_in_hours, f"{DOSAGE}.timing.repeat.boundsDuration"),
    (_duration_other_system, f"{DOSAGE}.timing.repeat.boundsDuration"),
    (_no_dispense, "MedicationRequest.dispenseRequest.quantity"),
    (_quantity_in_mg, "MedicationRequest.dispenseRequest.quantity.code"),
    (_quantity_zero, "MedicationRequest.dispenseRequest.quantity.value"),
    (_quantity_in_capsules, "MedicationRequest.dispenseRequest.quantity.code"),
    (_negative_repeats, "MedicationRequest.dispenseRequest.numberOfRepeatsAllowed"),
    (_text_repeats, "MedicationRequest.dispenseRequest.numberOfRepeatsAllowed"),
    pytest.param(_ceiling_in_mass, f"{DOSAGE}.maxDosePerPeriod.numerator"),
    (_ceiling_per_tablet, f"{DOSAGE}.maxDosePerPeriod.denominator"),
    (_ceiling_without_numerator, f"{DOSAGE}.maxDosePerPeriod.numerator"),
])
def test_missing_or_invalid_element_is_refused_naming_it(breaks: Any, expression: str) -> None:
    resource = prescription()
    breaks(resource)
    assert refused(resource, PARACETAMOL) == expression


def test_route_refusal_lists_the_allowed_routes() -> None:
    with pytest.raises(Invalid, match="26643006 \\(Vía oral\\)"):
        parse(prescription(route=RECTAL))


def test_item_without_a_route_in_the_formulary_cannot_be_prescribed() -> None:
    item = catalogue()[DIPHENHYDRAMINE_INJ]
    assert item.routes == ()
    resource = prescription(DIPHENHYDRAMINE_INJ, dose=1, dose_unit="{vial}", route="47625008")
    assert refused(resource) == f"{DOSAGE}.route"


def test_routes_of_a_local_injectable_are_honoured() -> None:
    item = dataclasses.replace(catalogue()[DIPHENHYDRAMINE_INJ], routes=("47625008", "78421000"))
    dosage = dosing.parse(prescription(dose=50, dose_unit="mg", route="78421000"), item)
    assert dosage.route == "78421000"
    assert dosage.per_dose == {"diphenhydramine": Quantity(50, "mg")}


# ---------------------------------------------------------------- frequency and duration ---


@pytest.mark.parametrize(("frequency", "period", "unit", "text", "per_day"), [
    (1, 8, "h", "cada 8 horas", 3),
    (1, 1, "h", "cada hora", 24),
    (1, 1, "d", "una vez al día", 1),
    (1, 2, "d", "cada 2 días", 0.5),
    (1, 1, "wk", "una vez por semana", 1 / 7),
    (1, 1, "mo", "una vez al mes", 1 / 30),
    (3, 1, "d", "3 veces al día", 3),
    (2, 1, "wk", "2 veces por semana", 2 / 7),
    (1, 0.5, "h", "cada 0.5 horas", 48),
])
def test_frequency_gives_doses_per_day_and_text(frequency: int, period: float, unit: str, text: str,
                                                per_day: float) -> None:
    dosage = parse(prescription(frequency=frequency, period=period, period_unit=unit))
    assert dosage.frequency_text == text
    assert dosage.doses_per_day == pytest.approx(per_day)


@pytest.mark.parametrize(("value", "unit", "days", "text"), [
    (5, "d", 5, "5 días"),
    (2, "wk", 14, "2 semanas"),
    (3, "mo", 90, "3 meses"),
    (1.5, "wk", 10.5, "1.5 semanas"),
    (366, "d", 366, "366 días"),
    (12, "mo", 360, "12 meses"),
    (52, "wk", 364, "52 semanas"),
])
def test_duration_in_days_weeks_or_months(value: float, unit: str, days: float, text: str) -> None:
    dosage = parse(prescription(days=value, duration_unit=unit))
    assert dosage.duration_days == pytest.approx(days)
    assert dosage.duration_text == text


def test_duration_given_as_unit_without_code_is_read() -> None:
    resource = prescription()
    bounds = resource["dosageInstruction"][0]["timing"]["repeat"]["boundsDuration"]
    bounds.pop("code")
    bounds.pop("system")
    assert parse(resource).duration_days == 5


@pytest.mark.parametrize(("value", "unit"), [(367, "d"), (53, "wk"), (13, "mo"), (1000, "d")])
def test_duration_over_366_days_is_refused(value: float, unit: str) -> None:
    assert refused(prescription(days=value, duration_unit=unit)) == f"{DOSAGE}.timing.repeat.boundsDuration"


# ---------------------------------------------------------------- as needed ---


def _as_needed(resource: dict[str, Any], limit: float, limit_unit: str, per: float = 1, per_unit: str = "d",
               *, concept: bool = False) -> dict[str, Any]:
    dosage = resource["dosageInstruction"][0]
    if concept:
        dosage["asNeededCodeableConcept"] = {"text": "dolor"}
    else:
        dosage["asNeededBoolean"] = True
    dosage["maxDosePerPeriod"] = {
        "numerator": {"value": limit, "unit": limit_unit, "system": UCUM, "code": limit_unit},
        "denominator": {"value": per, "unit": per_unit, "system": UCUM, "code": per_unit}}
    return resource


def test_as_needed_ceiling_above_the_schedule_raises_doses_per_day() -> None:
    dosage = parse(_as_needed(prescription(period=8), 4, "{tablet}"))
    assert dosage.as_needed is True
    assert dosage.doses_per_day == pytest.approx(4)
    assert dosage.daily == {"paracetamol": Quantity(2000, "mg")}


def test_as_needed_ceiling_below_the_schedule_keeps_the_schedule() -> None:
    dosage = parse(_as_needed(prescription(period=6), 2, "{tablet}"))
    assert dosage.doses_per_day == pytest.approx(4)


def test_as_needed_ceiling_in_mass_converts_to_doses() -> None:
    dosage = parse(_as_needed(prescription(dose=500, dose_unit="mg", period=8), 3, "g"))
    assert dosage.doses_per_day == pytest.approx(6)


def test_as_needed_ceiling_per_hours_is_scaled_to_a_day() -> None:
    dosage = parse(_as_needed(prescription(period=24), 2, "{tablet}", per=12, per_unit="h"))
    assert dosage.doses_per_day == pytest.approx(4)


def test_as_needed_codeable_concept_counts_as_as_needed() -> None:
    resource = prescription()
    resource["dosageInstruction"][0]["asNeededCodeableConcept"] = {"text": "dolor"}
    assert parse(resource).as_needed is True


def test_as_needed_codeable_concept_with_a_ceiling_is_accepted() -> None:
    dosage = parse(_as_needed(prescription(), 3, "{tablet}", concept=True))
    assert dosage.as_needed is True
    assert dosage.doses_per_day == pytest.approx(3)


def test_as_needed_without_a_ceiling_keeps_the_scheduled_rate() -> None:
    resource = prescription(period=6)
    resource["dosageInstruction"][0]["asNeededBoolean"] = True
    dosage = parse(resource)
    assert dosage.as_needed is True
    assert dosage.doses_per_day == pytest.approx(4)


# ---------------------------------------------------------------- quantity and packages ---


def test_quantity_in_packages_is_counted_up() -> None:
    item = catalogue()[PARACETAMOL]
    assert parse(prescription(quantity=2)).packages(item) == 2
    assert parse(prescription(quantity=1.5)).packages(item) == 2


@pytest.mark.parametrize(("tablets", "packages"), [(10, 1), (11, 2), (20, 2), (25, 3), (1, 1)])
def test_quantity_in_presentation_units_is_rounded_up_to_packages(tablets: int, packages: int) -> None:
    item = catalogue()[PARACETAMOL]
    assert item.package == Quantity(10, "{tablet}")
    dosage = parse(prescription(quantity=tablets, quantity_unit="{tablet}"))
    assert dosage.quantity == Quantity(tablets, "{tablet}")
    assert dosage.packages(item) == packages


@pytest.mark.parametrize(("amount", "unit", "packages"), [(120, "mL", 1), (240, "mL", 2), (250, "mL", 3),
                                                          (0.3, "L", 3)])
def test_liquid_quantity_in_volume_is_rounded_up_to_packages(amount: float, unit: str, packages: int) -> None:
    item = catalogue()[METRONIDAZOLE_SUSP]
    assert item.package == Quantity(120, "mL")
    dosage = parse(prescription(METRONIDAZOLE_SUSP, dose=5, dose_unit="mL", quantity=amount, quantity_unit=unit))
    assert dosage.packages(item) == packages


def test_liquid_quantity_in_bottles_is_accepted() -> None:
    dosage = parse(prescription(METRONIDAZOLE_SUSP, dose=5, dose_unit="mL", quantity=2, quantity_unit="{bottle}"))
    assert dosage.quantity == Quantity(2, "{bottle}")


def test_packages_unknown_without_the_item_package_size() -> None:
    item = dataclasses.replace(catalogue()[PARACETAMOL], package=None)
    dosage = dosing.parse(prescription(quantity=30, quantity_unit="{tablet}"), item)
    assert dosage.packages(item) is None
    assert dosing.parse(prescription(quantity=3), item).packages(item) == 3


def test_repeats_default_to_none_and_are_read() -> None:
    assert parse(prescription()).repeats == 0
    resource = prescription()
    resource["dispenseRequest"]["numberOfRepeatsAllowed"] = 2
    assert parse(resource).repeats == 2
