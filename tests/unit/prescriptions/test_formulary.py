"""The shipped catalogue, its vocabularies, search, a tenant's view and FHIR Medication in and out."""

from __future__ import annotations

import copy
import csv
import dataclasses
import re
from typing import Any

import pytest
from fhir.resources.R4B.medication import Medication

from expediente.errors import Invalid
from functions.prescriptions import formulary
from functions.prescriptions.formulary import (
    ATC_SYSTEM,
    CNIS_SYSTEM,
    EXT_INN,
    EXT_MAX_DOSE,
    EXT_PACKAGE,
    EXT_ROUTE,
    EXT_SALE_GROUP,
    EXT_SOURCE,
    FORM_SYSTEM,
    KNOWLEDGE,
    SNOMED,
    Formulary,
)
from functions.prescriptions.units import UCUM, Quantity

PARACETAMOL = "010.000.0104.00"        # tableta 500 mg, max 4000 mg/day
PARACETAMOL_DROPS = "010.000.0106.00"  # solución oral 100 mg/1 mL, envase 15 mL
SIMVASTATIN = "010.000.4124.00"
METRONIDAZOLE_SUSP = "010.000.1310.00"  # suspensión oral 250 mg/5 mL
ORAL = "26643006"
RECTAL = "37161004"
KEY_SHAPE = re.compile(r"^\d{3}\.\d{3}\.\d{4}\.\d{2}$")
ATC_LEVEL_5 = re.compile(r"^[A-Z]\d{2}[A-Z]{2}\d{2}$")
# Sources that describe the catalogue entry itself (key, ATC, form→route), not a dose or a sale group.
DESCRIPTIVE_SOURCES = ("CNIS", "SSA/IMSS", "WHO ATC", "forms.csv")


def _csv_rows(name: str) -> list[dict[str, str]]:
    with (KNOWLEDGE / name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _catalogue() -> dict[str, formulary.Item]:
    return formulary.catalogue()


def _local_resource(**changes: Any) -> dict[str, Any]:
    """A valid local Medication: one ingredient, a tablet, a source."""
    resource: dict[str, Any] = {
        "resourceType": "Medication",
        "code": {"text": "Melatonina", "coding": [{"system": ATC_SYSTEM, "code": "N05CH01"}]},
        "form": {"coding": [{"system": FORM_SYSTEM, "code": "TAB"}]},
        "ingredient": [{
            "itemCodeableConcept": {"text": "melatonina", "extension": [{"url": EXT_INN, "valueString": "Melatonin"}]},
            "strength": {"numerator": {"value": 3, "unit": "mg", "system": UCUM, "code": "mg"},
                         "denominator": {"value": 1, "unit": "{tablet}", "system": UCUM, "code": "{tablet}"}},
        }],
        "extension": [
            {"url": EXT_SOURCE, "valueString": "Ficha técnica del fabricante, 2025"},
            {"url": EXT_PACKAGE, "valueQuantity": {"value": 30, "unit": "{tablet}", "system": UCUM,
                                                   "code": "{tablet}"}},
        ],
    }
    resource.update(changes)
    return resource


# ---------------------------------------------------------------- shipped catalogue ---


def test_shipped_catalogue_loads_at_least_300_items() -> None:
    assert len(_catalogue()) >= 300


def test_catalogue_has_exactly_one_item_per_csv_row_and_every_key_is_cnis_shaped() -> None:
    rows = _csv_rows("formulary.csv")
    keys = [row["key"] for row in rows]
    assert len(keys) == len(set(keys)), "duplicate keys would silently collapse in the catalogue"
    catalogue = _catalogue()
    assert set(catalogue) == set(keys)
    for item_id, item in catalogue.items():
        assert KEY_SHAPE.match(item_id), item_id
        assert item.key == item.id == item_id


def test_every_catalogue_item_cites_a_source() -> None:
    for item in _catalogue().values():
        assert item.sources, item.id
        assert all(source.strip() for source in item.sources), item.id


def test_every_catalogue_atc_code_is_level_5() -> None:
    coded = [item for item in _catalogue().values() if item.atc is not None]
    assert len(coded) > 300
    for item in coded:
        assert ATC_LEVEL_5.match(item.atc or ""), (item.id, item.atc)


def test_every_item_route_is_in_the_route_vocabulary() -> None:
    vocabulary = set(formulary.routes())
    assert vocabulary == {row["code"] for row in _csv_rows("routes.csv")}
    for item in _catalogue().values():
        assert set(item.routes) <= vocabulary, (item.id, item.routes)


def test_every_item_form_is_in_the_form_vocabulary_and_its_routes_are_allowed_by_the_form() -> None:
    forms = formulary.forms()
    assert set(forms) == {row["form_code"] for row in _csv_rows("forms.csv")}
    for item in _catalogue().values():
        assert item.form_code in forms, (item.id, item.form_code)
        assert set(item.routes) <= set(forms[item.form_code].routes), (item.id, item.routes)


def test_every_form_route_is_in_the_route_vocabulary() -> None:
    vocabulary = set(formulary.routes())
    for form in formulary.forms().values():
        assert set(form.routes) <= vocabulary, form.code


def test_injectables_have_no_route_rather_than_a_guessed_one() -> None:
    injectables = [item for item in _catalogue().values() if item.form_code == "INJ"]
    assert injectables
    assert all(item.routes == () for item in injectables)


def test_sale_group_and_max_dose_are_only_given_with_a_source_beyond_the_catalogue_entry() -> None:
    checked = 0
    for item in _catalogue().values():
        if item.sale_group is None and item.max_daily_dose is None:
            continue
        checked += 1
        extra = [s for s in item.sources if not s.startswith(DESCRIPTIVE_SOURCES)]
        assert extra, f"{item.id} has a sale group or maximum dose but cites only {item.sources}"
    assert checked > 0


def test_max_daily_doses_are_mass_amounts_on_single_ingredient_items() -> None:
    dosed = [item for item in _catalogue().values() if item.max_daily_dose is not None]
    assert dosed
    for item in dosed:
        assert len(item.ingredients) == 1, item.id
        assert item.max_daily_dose is not None and item.max_daily_dose.kind == "mass", item.id


def test_every_catalogue_ingredient_strength_is_positive() -> None:
    zero = [(item.id, item.strength_text) for item in _catalogue().values()
            if any(i.strength.value <= 0 for i in item.ingredients)]
    assert zero == []


def test_every_catalogue_source_is_a_whole_citation() -> None:
    broken = [(item.id, source) for item in _catalogue().values() for source in item.sources
              if source.count("(") != source.count(")")]
    assert broken == []


def test_item_strength_text_and_label_read_like_a_prescription() -> None:
    assert _catalogue()[PARACETAMOL].label == "Paracetamol, tableta 500 mg"
    assert _catalogue()[METRONIDAZOLE_SUSP].strength_text == "250 mg/5 mL"


def _row(**changes: str) -> dict[str, str]:
    row = next(r for r in _csv_rows("formulary.csv") if r["key"] == PARACETAMOL)
    row.update(changes)
    return row


def test_item_from_row_reads_a_valid_row() -> None:
    item = formulary.item_from_row(_row())
    assert item.inns == ("paracetamol",)
    assert item.max_daily_dose == Quantity(4000, "mg")
    assert item.package == Quantity(10, "{tablet}")
    assert item.per is None


@pytest.mark.parametrize(("changes", "message"), [
    ({"key": "010.000.104.00"}, "GGG.GGG.GGGG.VV"),
    ({"atc": "N02BE"}, "level-5"),
    ({"sale_group": "VII"}, "sale group"),
    ({"ingredients": "paracetamol|caffeine"}, "same number of parts"),
    ({"ingredients": ""}, "same number of parts"),
    ({"strengths": "500 tabletas"}, "UCUM"),
    ({"strengths": "500 mg|80 mg"}, "same number of parts"),
])
def test_item_from_row_refuses_a_malformed_row(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        formulary.item_from_row(_row(**changes))


def test_atc_by_inn_gives_the_single_ingredient_code() -> None:
    codes = formulary.atc_by_inn()
    assert codes["simvastatin"] == "C10AA01"
    assert codes["paracetamol"] == "N02BE01"
    singles = {(item.inns[0], item.atc) for item in _catalogue().values() if len(item.ingredients) == 1}
    assert all((inn, atc) in singles for inn, atc in codes.items())
    assert "cilastatin" not in codes  # only ever in a combination (imipenem/cilastatina)


# ---------------------------------------------------------------- search ---


def _everything() -> Formulary:
    return Formulary(local={}, hidden=frozenset())


def test_name_search_is_an_accent_insensitive_prefix_of_the_whole_name() -> None:
    found = _everything().search(name="acido acetil")
    assert found
    assert {i.generic_name for i in found} == {"Ácido acetilsalicílico"}


def test_name_search_ignores_case_and_matches_a_word_prefix() -> None:
    found = _everything().search(name="PARACET")
    assert PARACETAMOL in {i.id for i in found}
    assert all("paracetamol" in i.inns for i in found)


def test_name_search_matches_any_word_of_a_combination() -> None:
    found = _everything().search(name="sulfametox")
    assert found
    assert all("sulfamethoxazole" in i.inns for i in found)


def test_name_search_matches_the_english_inn() -> None:
    assert SIMVASTATIN in {i.id for i in _everything().search(name="simvastatin")}


def test_name_search_does_not_match_inside_a_word() -> None:
    assert _everything().search(name="cetamol") == []


def test_search_results_are_in_generic_name_order() -> None:
    found = _everything().search(atc="J01")
    names = [formulary.normalize(i.generic_name) for i in found]
    assert len(names) > 5
    assert names == sorted(names)


def test_search_by_key_finds_that_item_only() -> None:
    found = _everything().search(code=PARACETAMOL)
    assert [i.id for i in found] == [PARACETAMOL]


def test_search_by_atc_prefix_selects_the_class_only() -> None:
    found = _everything().search(atc="C10AA")
    assert SIMVASTATIN in {i.id for i in found}
    assert {i.inns[0] for i in found} <= {"simvastatin", "atorvastatin", "pravastatin", "rosuvastatin",
                                          "lovastatin", "fluvastatin", "pitavastatin"}
    assert all((i.atc or "").startswith("C10AA") for i in found)


def test_search_by_atc_accepts_lower_case() -> None:
    assert [i.id for i in _everything().search(atc="c10aa")] == [i.id for i in _everything().search(atc="C10AA")]


def test_search_criteria_combine() -> None:
    found = _everything().search(name="paracetamol", atc="C10AA")
    assert found == []


@pytest.mark.parametrize("atc", ["C1", "10AA", "C10A1", "C10AA0", "C10AA011"])
def test_search_refuses_a_malformed_atc_prefix(atc: str) -> None:
    with pytest.raises(Invalid) as raised:
        _everything().search(atc=atc)
    assert raised.value.expression == "atc"


def test_hidden_items_are_left_out_unless_asked_for() -> None:
    view = Formulary(local={}, hidden=frozenset({PARACETAMOL}))
    assert PARACETAMOL not in {i.id for i in view.search(name="paracetamol")}
    assert PARACETAMOL in {i.id for i in view.search(name="paracetamol", include_hidden=True)}
    assert view.get(PARACETAMOL) is None
    assert view.get(PARACETAMOL, include_hidden=True) == _catalogue()[PARACETAMOL]
    assert PARACETAMOL not in {i.id for i in view.items()}


def test_unknown_item_is_none() -> None:
    assert _everything().get("999.999.9999.99") is None


def test_local_items_are_found_by_name_and_by_id() -> None:
    local = formulary.local_item(_local_resource(), "melatonina-3")
    view = Formulary(local={"melatonina-3": local}, hidden=frozenset())
    assert [i.id for i in view.search(name="melaton")] == ["melatonina-3"]
    assert [i.id for i in view.search(code="melatonina-3")] == ["melatonina-3"]
    assert view.get("melatonina-3") == local
    assert local.local is True


def _clinic_version_of_paracetamol() -> formulary.Item:
    resource = formulary.to_fhir(_catalogue()[PARACETAMOL])
    resource["code"]["text"] = "Paracetamol (versión de la clínica)"
    return formulary.local_item(resource, PARACETAMOL)


def test_local_item_with_a_catalogue_key_overrides_the_catalogue_item_in_get() -> None:
    clinic = _clinic_version_of_paracetamol()
    view = Formulary(local={PARACETAMOL: clinic}, hidden=frozenset())
    assert view.get(PARACETAMOL) is clinic
    assert view.get(PARACETAMOL).generic_name == "Paracetamol (versión de la clínica)"  # type: ignore[union-attr]


def test_local_item_with_a_catalogue_key_replaces_it_in_search() -> None:
    clinic = _clinic_version_of_paracetamol()
    view = Formulary(local={PARACETAMOL: clinic}, hidden=frozenset())
    found = view.search(code=PARACETAMOL)
    assert found == [clinic]


# ---------------------------------------------------------------- local items ---


def _without_extension(resource: dict[str, Any], url: str) -> dict[str, Any]:
    resource["extension"] = [e for e in resource["extension"] if e["url"] != url]
    return resource


def _missing_text(r: dict[str, Any]) -> dict[str, Any]:
    r["code"].pop("text")
    return r


def _blank_text(r: dict[str, Any]) -> dict[str, Any]:
    r["code"]["text"] = "   "
    return r


def _missing_form(r: dict[str, Any]) -> dict[str, Any]:
    r.pop("form")
    return r


def _unknown_form(r: dict[str, Any]) -> dict[str, Any]:
    r["form"]["coding"][0]["code"] = "PILL"
    return r


def _missing_ingredient(r: dict[str, Any]) -> dict[str, Any]:
    r["ingredient"] = []
    return r


def _missing_inn(r: dict[str, Any]) -> dict[str, Any]:
    r["ingredient"][0]["itemCodeableConcept"].pop("extension")
    return r


def _missing_strength(r: dict[str, Any]) -> dict[str, Any]:
    r["ingredient"][0].pop("strength")
    return r


def _zero_strength(r: dict[str, Any]) -> dict[str, Any]:
    r["ingredient"][0]["strength"]["numerator"]["value"] = 0
    return r


def _strength_unit_unknown(r: dict[str, Any]) -> dict[str, Any]:
    r["ingredient"][0]["strength"]["numerator"]["code"] = "miligramos"
    return r


def _strength_in_count(r: dict[str, Any]) -> dict[str, Any]:
    r["ingredient"][0]["strength"]["numerator"]["code"] = "{tablet}"
    return r


def _per_two_tablets(r: dict[str, Any]) -> dict[str, Any]:
    r["ingredient"][0]["strength"]["denominator"]["value"] = 2
    return r


def _mixed_denominators(r: dict[str, Any]) -> dict[str, Any]:
    second = copy.deepcopy(r["ingredient"][0])
    second["strength"]["denominator"] = {"value": 5, "unit": "mL", "system": UCUM, "code": "mL"}
    r["ingredient"].append(second)
    return r


def _missing_source(r: dict[str, Any]) -> dict[str, Any]:
    return _without_extension(r, EXT_SOURCE)


def _blank_source(r: dict[str, Any]) -> dict[str, Any]:
    r["extension"].append({"url": EXT_SOURCE, "valueString": " "})
    return r


def _bad_key(r: dict[str, Any]) -> dict[str, Any]:
    r["code"]["coding"].append({"system": CNIS_SYSTEM, "code": "0104"})
    return r


def _level_4_atc(r: dict[str, Any]) -> dict[str, Any]:
    r["code"]["coding"][0]["code"] = "N05CH"
    return r


def _unknown_route(r: dict[str, Any]) -> dict[str, Any]:
    r["extension"].append({"url": EXT_ROUTE, "valueCodeableConcept": {"coding": [{"system": SNOMED,
                                                                                  "code": "999999"}]}})
    return r


def _bad_sale_group(r: dict[str, Any]) -> dict[str, Any]:
    r["extension"].append({"url": EXT_SALE_GROUP, "valueCode": "VII"})
    return r


def _two_sale_groups(r: dict[str, Any]) -> dict[str, Any]:
    r["extension"] += [{"url": EXT_SALE_GROUP, "valueCode": "IV"}, {"url": EXT_SALE_GROUP, "valueCode": "II"}]
    return r


def _max_dose_in_tablets(r: dict[str, Any]) -> dict[str, Any]:
    r["extension"].append({"url": EXT_MAX_DOSE, "valueQuantity": {"value": 3, "unit": "{tablet}", "system": UCUM,
                                                                   "code": "{tablet}"}})
    return r


def _max_dose_on_combination(r: dict[str, Any]) -> dict[str, Any]:
    second = copy.deepcopy(r["ingredient"][0])
    second["itemCodeableConcept"]["extension"][0]["valueString"] = "pyridoxine"
    r["ingredient"].append(second)
    r["extension"].append({"url": EXT_MAX_DOSE, "valueQuantity": {"value": 10, "unit": "mg", "system": UCUM,
                                                                   "code": "mg"}})
    return r


@pytest.mark.parametrize(("breaks", "expression"), [
    (_missing_text, "Medication.code.text"),
    (_blank_text, "Medication.code.text"),
    (_missing_form, "Medication.form"),
    (_unknown_form, "Medication.form"),
    (_missing_ingredient, "Medication.ingredient"),
    (_missing_inn, "Medication.ingredient[0].itemCodeableConcept"),
    (_missing_strength, "Medication.ingredient[0].strength.numerator"),
    (_zero_strength, "Medication.ingredient[0].strength.numerator.value"),
    (_strength_unit_unknown, "Medication.ingredient[0].strength.numerator.code"),
    (_strength_in_count, "Medication.ingredient[0].strength.numerator.code"),
    (_per_two_tablets, "Medication.ingredient[0].strength.denominator"),
    (_mixed_denominators, "Medication.ingredient"),
    (_missing_source, "Medication.extension(fuente)"),
    (_blank_source, "Medication.extension(fuente)"),
    (_bad_key, "Medication.code.coding"),
    (_level_4_atc, "Medication.code.coding"),
    (_unknown_route, "Medication.extension(via-administracion)"),
    (_bad_sale_group, "Medication.extension(grupo-venta)"),
    (_two_sale_groups, "Medication.extension(grupo-venta)"),
    (_max_dose_in_tablets, "Medication.extension(dosis-maxima-diaria).code"),
    (_max_dose_on_combination, "Medication.extension(dosis-maxima-diaria)"),
])
def test_local_item_refuses_a_missing_or_invalid_field_naming_it(breaks: Any, expression: str) -> None:
    with pytest.raises(Invalid) as raised:
        formulary.local_item(breaks(_local_resource()), "local-1")
    assert raised.value.expression == expression


def test_local_item_reads_every_field() -> None:
    resource = _local_resource()
    resource["extension"] += [
        {"url": EXT_SALE_GROUP, "valueCode": "IV"},
        {"url": EXT_MAX_DOSE, "valueQuantity": {"value": 10, "unit": "mg", "system": UCUM, "code": "mg"}},
    ]
    item = formulary.local_item(resource, "local-1")
    assert item.id == "local-1"
    assert item.key is None
    assert item.atc == "N05CH01"
    assert item.inns == ("melatonin",)  # the INN is lower-cased
    assert item.ingredients[0].strength == Quantity(3, "mg")
    assert item.per is None
    assert item.presentation_unit == "{tablet}"
    assert item.package == Quantity(30, "{tablet}")
    assert item.routes == (ORAL,)  # the form's routes by default
    assert item.sale_group == "IV"
    assert item.max_daily_dose == Quantity(10, "mg")
    assert item.sources == ("Ficha técnica del fabricante, 2025",)


def test_local_item_keeps_routes_it_names() -> None:
    resource = _local_resource()
    resource["form"]["coding"][0]["code"] = "INJ"
    resource["ingredient"][0]["strength"]["denominator"] = {"value": 1, "unit": "{ampule}", "system": UCUM,
                                                            "code": "{ampule}"}
    resource["extension"] = [e for e in resource["extension"] if e["url"] != EXT_PACKAGE]
    for code in ("47625008", "78421000"):
        resource["extension"].append({"url": EXT_ROUTE, "valueCodeableConcept": {"coding": [{"system": SNOMED,
                                                                                             "code": code}]}})
    item = formulary.local_item(resource, "local-inj")
    assert item.routes == ("47625008", "78421000")
    assert item.presentation_unit == "{ampule}"


# ---------------------------------------------------------------- FHIR Medication ---


def test_every_catalogue_item_is_a_valid_r4b_medication() -> None:
    for item in _catalogue().values():
        resource = formulary.to_fhir(item)
        parsed = Medication.model_validate(resource)
        assert parsed.id == item.id


def test_to_fhir_carries_key_atc_routes_sources_and_max_dose() -> None:
    resource = formulary.to_fhir(_catalogue()[PARACETAMOL])
    codings = {c["system"]: c["code"] for c in resource["code"]["coding"]}
    assert codings == {CNIS_SYSTEM: PARACETAMOL, ATC_SYSTEM: "N02BE01"}
    assert resource["status"] == "active"
    urls = [e["url"] for e in resource["extension"]]
    assert urls.count(EXT_ROUTE) == 1
    assert EXT_MAX_DOSE in urls
    assert any("Health Canada" in e["valueString"] for e in resource["extension"] if e["url"] == EXT_SOURCE)
    strength = resource["ingredient"][0]["strength"]
    assert strength["numerator"]["value"] == 500
    assert strength["denominator"]["code"] == "{tablet}"


def test_hidden_item_is_an_inactive_medication() -> None:
    resource = formulary.to_fhir(_catalogue()[PARACETAMOL], hidden=True)
    assert resource["status"] == "inactive"
    assert Medication.model_validate(resource).status == "inactive"


def test_local_item_round_trips_through_fhir() -> None:
    resource = _local_resource()
    resource["extension"] += [
        {"url": EXT_SALE_GROUP, "valueCode": "IV"},
        {"url": EXT_MAX_DOSE, "valueQuantity": {"value": 10, "unit": "mg", "system": UCUM, "code": "mg"}},
    ]
    item = formulary.local_item(resource, "local-1")
    again = formulary.to_fhir(item)
    Medication.model_validate(again)
    assert formulary.local_item(again, "local-1") == item


_ROUND_TRIP_FIELDS = ("key", "generic_name", "ingredients", "per", "package", "form_code", "routes", "atc",
                      "sale_group", "max_daily_dose", "sources")


@pytest.mark.parametrize("key", [PARACETAMOL, SIMVASTATIN, "010.000.1903.00", METRONIDAZOLE_SUSP,
                                 "010.000.0406.00"])
def test_catalogue_item_round_trips_through_local_item(key: str) -> None:
    item = _catalogue()[key]
    back = formulary.local_item(formulary.to_fhir(item), key)
    assert back.local is True
    for name in _ROUND_TRIP_FIELDS:
        assert getattr(back, name) == getattr(item, name), name


def test_every_catalogue_item_with_positive_strengths_round_trips_its_dosing_fields() -> None:
    checked = 0
    for item in _catalogue().values():
        if any(i.strength.value <= 0 for i in item.ingredients):
            continue  # see test_every_catalogue_ingredient_strength_is_positive
        back = formulary.local_item(formulary.to_fhir(item), item.id)
        assert [getattr(back, n) for n in _ROUND_TRIP_FIELDS] == [getattr(item, n) for n in _ROUND_TRIP_FIELDS], \
            item.id
        checked += 1
    assert checked >= 300


def test_liquid_catalogue_item_keeps_its_presentation_unit_through_fhir() -> None:
    item = _catalogue()[PARACETAMOL_DROPS]
    assert item.presentation_unit == "{bottle}"
    back = formulary.local_item(formulary.to_fhir(item), item.id)
    assert back.presentation_unit == "{bottle}"


def test_to_fhir_of_a_local_item_marks_it_local_and_has_no_catalogue_coding() -> None:
    resource = formulary.to_fhir(formulary.local_item(_local_resource(), "local-1"))
    assert {"url": formulary.EXT_LOCAL, "valueBoolean": True} in resource["extension"]
    assert [c["system"] for c in resource["code"]["coding"]] == [ATC_SYSTEM]


def test_item_replace_keeps_search_words_out_of_equality() -> None:
    item = _catalogue()[PARACETAMOL]
    assert dataclasses.replace(item, search_words=()) == item
