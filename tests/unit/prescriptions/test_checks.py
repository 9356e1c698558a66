"""Medication checks: interactions, duplication, allergies and cross-reactivity, maximum daily dose."""

from __future__ import annotations

import pytest

from functions.prescriptions import checks, dosing
from functions.prescriptions.checks import Alert, Allergy, Medicine
from functions.prescriptions.formulary import atc_by_inn, catalogue
from functions.prescriptions.knowledge_base import SEVERITIES, knowledge_base
from functions.prescriptions.units import Quantity
from tests.unit.prescriptions.test_dosing import prescription

PARACETAMOL = "010.000.0104.00"          # tableta 500 mg, max 4000 mg/day
PARACETAMOL_SUPP = "010.000.0105.00"     # supositorio 300 mg
SIMVASTATIN = "010.000.4124.00"          # C10AA01
ATORVASTATIN = "010.000.5106.00"         # C10AA05
CLARITHROMYCIN = "010.000.2132.00"
WARFARIN = "010.000.0623.00"
IBUPROFEN = "010.000.5941.00"            # M01AE01, max 3200 mg/day
NAPROXEN = "010.000.3407.00"             # M01AE02
DICLOFENAC = "010.000.3417.00"           # M01AB05
AMOXICILLIN = "010.000.2128.00"          # J01CA04
CEFALEXIN = "010.000.1939.00"            # J01DB01


def medicine(key: str, ref: str | None = None, **daily_mg: float) -> Medicine:
    item = catalogue()[key]
    daily = {inn: Quantity(mg, "mg") for inn, mg in daily_mg.items()}
    return Medicine(ref, item, daily, item.label)


def allergy(ref: str = "AllergyIntolerance/a1", *, inns: tuple[str, ...] = (), classes: tuple[str, ...] = (),
            criticality: str = "low", label: str = "alergia") -> Allergy:
    return Allergy(ref, label, frozenset(inns), classes, criticality)


def check(proposed: Medicine, current: list[Medicine] | None = None,
          allergies: list[Allergy] | None = None) -> list[Alert]:
    return checks.check(proposed, current or [], allergies or [], kb=knowledge_base(), atc_of=atc_by_inn())


def of_kind(alerts: list[Alert], kind: str) -> list[Alert]:
    return [a for a in alerts if a.kind == kind]


# ---------------------------------------------------------------- interactions ---


@pytest.mark.parametrize(("first", "second"), [(SIMVASTATIN, CLARITHROMYCIN), (CLARITHROMYCIN, SIMVASTATIN)])
def test_simvastatin_and_clarithromycin_interact_whichever_is_proposed(first: str, second: str) -> None:
    alerts = of_kind(check(medicine(first), [medicine(second, "MedicationRequest/other")]), "interaction")
    rules = {a.rule for a in alerts}
    assert {"onc-25", "ansm-039"} <= rules
    for alert in alerts:
        assert alert.severity == "contraindicated"
        assert alert.blocking is True
        assert alert.code == ("DRG", "Drug Interaction Alert")
        assert alert.implicated == ("MedicationRequest/other",)
        assert catalogue()[first].label in alert.detail


def test_onc_interaction_cites_the_onc_paper() -> None:
    alerts = check(medicine(SIMVASTATIN), [medicine(CLARITHROMYCIN, "MedicationRequest/other")])
    onc = next(a for a in alerts if a.rule == "onc-25")
    assert "Phansalkar" in onc.citation


@pytest.mark.parametrize(("first", "second"), [(WARFARIN, IBUPROFEN), (IBUPROFEN, WARFARIN)])
def test_warfarin_and_ibuprofen_interact_whichever_is_proposed(first: str, second: str) -> None:
    alerts = of_kind(check(medicine(first), [medicine(second, "MedicationRequest/other")]), "interaction")
    assert [(a.rule, a.severity) for a in alerts] == [("ansm-069", "major")]
    assert alerts[0].blocking is True
    assert "ANSM" in alerts[0].citation


def test_interaction_with_the_proposed_medicine_itself_needs_another_medicine() -> None:
    assert check(medicine(SIMVASTATIN)) == []


def test_unrelated_medicines_raise_no_alert() -> None:
    alerts = check(medicine(PARACETAMOL, paracetamol=1500), [medicine(AMOXICILLIN, "MedicationRequest/other")],
                   [allergy(inns=("sulfamethoxazole",))])
    assert alerts == []


# ---------------------------------------------------------------- ordering and keys ---


def test_alerts_are_most_severe_first() -> None:
    alerts = check(medicine(SIMVASTATIN), [medicine(ATORVASTATIN, "MedicationRequest/statin"),
                                           medicine(CLARITHROMYCIN, "MedicationRequest/macrolide")])
    severities = [SEVERITIES.index(a.severity) for a in alerts]
    assert severities == sorted(severities)
    assert alerts[0].severity == "contraindicated"
    assert alerts[-1].kind == "duplicate-class"
    assert alerts[-1].severity == "moderate"


def test_severity_scale_and_blocking() -> None:
    assert SEVERITIES == ("contraindicated", "major", "moderate", "minor")
    blocking = {s: Alert("interaction", s, "r", "d", "m", "c").blocking for s in SEVERITIES}
    assert blocking == {"contraindicated": True, "major": True, "moderate": False, "minor": False}
    assert set(checks.FHIR_SEVERITY) == set(SEVERITIES)


def test_alert_key_is_stable_across_rechecks() -> None:
    first = check(medicine(SIMVASTATIN), [medicine(CLARITHROMYCIN, "MedicationRequest/other")])
    again = check(medicine(SIMVASTATIN), [medicine(CLARITHROMYCIN, "MedicationRequest/other")])
    assert [a.key for a in first] == [a.key for a in again]
    assert "interaction|onc-25|MedicationRequest/other" in {a.key for a in first}


def test_alert_key_ignores_wording_and_order_of_implicated() -> None:
    one = Alert("high-dose", "major", "max-dose-paracetamol", "texto", "m", "c", ("MR/b", "MR/a"))
    other = Alert("high-dose", "major", "max-dose-paracetamol", "otro texto", "m2", "c2", ("MR/a", "MR/b"))
    assert one.key == other.key == "high-dose|max-dose-paracetamol|MR/a|MR/b"


def test_alert_key_differs_by_implicated_prescription() -> None:
    alerts = check(medicine(SIMVASTATIN), [medicine(CLARITHROMYCIN, "MedicationRequest/a"),
                                           medicine(CLARITHROMYCIN, "MedicationRequest/b")])
    onc = [a for a in alerts if a.rule == "onc-25"]
    assert sorted(a.implicated for a in onc) == [("MedicationRequest/a",), ("MedicationRequest/b",)]


def test_the_same_alert_is_reported_once() -> None:
    other = medicine(CLARITHROMYCIN, "MedicationRequest/other")
    alerts = check(medicine(SIMVASTATIN), [other, other])
    keys = [a.key for a in alerts]
    assert len(keys) == len(set(keys))
    assert len([a for a in alerts if a.rule == "onc-25"]) == 1


# ---------------------------------------------------------------- duplication ---


def test_same_ingredient_is_a_duplicate_generic() -> None:
    alerts = check(medicine(PARACETAMOL), [medicine(PARACETAMOL_SUPP, "MedicationRequest/supp")])
    duplicates = of_kind(alerts, "duplicate-generic")
    assert [(a.rule, a.severity, a.implicated) for a in duplicates] == [
        ("dup-paracetamol", "moderate", ("MedicationRequest/supp",))]
    assert duplicates[0].code[0] == "DUPTHPGEN"
    assert of_kind(alerts, "duplicate-class") == []


def test_two_statins_are_a_duplicate_class() -> None:
    alerts = check(medicine(SIMVASTATIN), [medicine(ATORVASTATIN, "MedicationRequest/atorva")])
    duplicates = of_kind(alerts, "duplicate-class")
    assert [(a.rule, a.severity) for a in duplicates] == [("dup-class-C10AA", "moderate")]
    assert duplicates[0].code[0] == "DUPTHPCLS"
    assert of_kind(alerts, "duplicate-generic") == []


def test_different_level_4_classes_of_one_level_3_group_are_not_duplicates() -> None:
    assert catalogue()[IBUPROFEN].atc[:4] == catalogue()[DICLOFENAC].atc[:4] == "M01A"  # type: ignore[index]
    alerts = check(medicine(IBUPROFEN), [medicine(DICLOFENAC, "MedicationRequest/diclo")])
    assert of_kind(alerts, "duplicate-class") == []
    assert of_kind(alerts, "duplicate-generic") == []


def test_item_without_atc_is_classed_by_its_ingredient() -> None:
    aspirin_300 = "010.000.0103.00"   # no ATC in the catalogue; acetylsalicylic acid is N02BA01 elsewhere
    assert catalogue()[aspirin_300].atc is None
    alerts = check(medicine(aspirin_300), [medicine("010.000.0101.00", "MedicationRequest/asa")])
    assert [a.rule for a in of_kind(alerts, "duplicate-generic")] == ["dup-acetylsalicylic acid"]


# ---------------------------------------------------------------- allergies ---


@pytest.mark.parametrize(("criticality", "severity"), [("high", "contraindicated"), ("low", "major"),
                                                       ("unable-to-assess", "major")])
def test_allergy_to_the_ingredient_alerts_by_criticality(criticality: str, severity: str) -> None:
    alerts = check(medicine(IBUPROFEN), allergies=[allergy(inns=("ibuprofen",), criticality=criticality)])
    assert [(a.kind, a.severity, a.rule, a.implicated) for a in alerts] == [
        ("allergy", severity, "allergy-ibuprofen", ("AllergyIntolerance/a1",))]
    assert alerts[0].code[0] == "ALGY"


def test_allergy_to_a_class_alerts_for_a_member() -> None:
    alerts = check(medicine(AMOXICILLIN), allergies=[allergy(classes=("J01C",), label="penicilinas")])
    assert [(a.kind, a.rule) for a in alerts] == [("allergy", "allergy-J01C")]
    assert "penicilinas" in alerts[0].detail


def test_allergy_to_another_class_does_not_alert() -> None:
    assert check(medicine(AMOXICILLIN), allergies=[allergy(classes=("J01F",))]) == []


def test_penicillin_allergy_warns_about_a_cephalosporin() -> None:
    alerts = check(medicine(CEFALEXIN), allergies=[allergy(classes=("J01C",), label="penicilinas")])
    assert [(a.kind, a.severity, a.rule) for a in alerts] == [("cross-allergy", "moderate", "penicilina-j01db")]
    assert alerts[0].code[0] == "RALG"
    assert alerts[0].blocking is False
    assert "Khan DA" in alerts[0].citation


def test_allergy_to_amoxicillin_by_substance_warns_about_a_cephalosporin() -> None:
    alerts = check(medicine(CEFALEXIN), allergies=[allergy(inns=("amoxicillin",))])
    assert [(a.kind, a.rule) for a in alerts] == [("cross-allergy", "penicilina-j01db")]


@pytest.mark.parametrize("key", [NAPROXEN, DICLOFENAC])
def test_ibuprofen_allergy_warns_about_another_nsaid(key: str) -> None:
    assert (catalogue()[key].atc or "").startswith("M01A")
    alerts = check(medicine(key), allergies=[allergy(inns=("ibuprofen",), label="ibuprofeno")])
    assert [(a.kind, a.severity, a.rule) for a in alerts] == [("cross-allergy", "major", "aine-m01a-m01a")]
    assert alerts[0].blocking is True


def test_direct_allergy_is_not_also_reported_as_cross_allergy() -> None:
    alerts = check(medicine(IBUPROFEN), allergies=[allergy(inns=("ibuprofen",))])
    assert of_kind(alerts, "cross-allergy") == []


def test_ibuprofen_allergy_does_not_warn_about_paracetamol() -> None:
    assert check(medicine(PARACETAMOL), allergies=[allergy(inns=("ibuprofen",))]) == []


def test_each_allergy_gives_its_own_alert() -> None:
    alerts = check(medicine(AMOXICILLIN), allergies=[allergy("AllergyIntolerance/a1", inns=("amoxicillin",)),
                                                     allergy("AllergyIntolerance/a2", classes=("J01C",))])
    assert sorted(a.implicated for a in alerts) == [("AllergyIntolerance/a1",), ("AllergyIntolerance/a2",)]


# ---------------------------------------------------------------- maximum daily dose ---


def test_paracetamol_6_g_a_day_is_a_high_dose() -> None:
    alerts = check(medicine(PARACETAMOL, paracetamol=6000))
    assert [(a.kind, a.severity, a.rule) for a in alerts] == [("high-dose", "major", "max-dose-paracetamol")]
    assert alerts[0].code[0] == "DOSEH"
    assert alerts[0].implicated == ()
    assert alerts[0].citation.startswith(checks.FORMULARY_DOSE_CITATION)
    assert "Health Canada" in alerts[0].citation
    assert "6000 mg" in alerts[0].detail


def test_paracetamol_4_g_a_day_is_not_a_high_dose() -> None:
    assert check(medicine(PARACETAMOL, paracetamol=4000)) == []


def test_high_dose_from_a_parsed_prescription() -> None:
    resource = prescription(PARACETAMOL, dose=2, period=4)  # 2 × 500 mg six times a day = 6 g
    item = catalogue()[PARACETAMOL]
    dosage = dosing.parse(resource, item)
    alerts = check(Medicine(None, item, dosage.daily, item.label))
    assert [a.kind for a in alerts] == ["high-dose"]


def test_current_prescriptions_of_the_same_ingredient_add_up() -> None:
    current = [medicine(PARACETAMOL_SUPP, "MedicationRequest/a", paracetamol=1500),
               medicine(PARACETAMOL, "MedicationRequest/b", paracetamol=1500)]
    alerts = of_kind(check(medicine(PARACETAMOL, paracetamol=1500), current), "high-dose")
    assert len(alerts) == 1
    assert alerts[0].implicated == ("MedicationRequest/a", "MedicationRequest/b")
    assert "4500 mg" in alerts[0].detail
    assert "sumando" in alerts[0].detail


def test_current_amounts_in_other_mass_units_are_converted() -> None:
    current = Medicine("MedicationRequest/a", catalogue()[PARACETAMOL], {"paracetamol": Quantity(3, "g")}, "p")
    alerts = of_kind(check(medicine(PARACETAMOL, paracetamol=1500), [current]), "high-dose")
    assert [a.implicated for a in alerts] == [("MedicationRequest/a",)]


def test_current_prescriptions_within_the_maximum_do_not_alert() -> None:
    current = [medicine(PARACETAMOL_SUPP, "MedicationRequest/a", paracetamol=1000)]
    assert of_kind(check(medicine(PARACETAMOL, paracetamol=3000), current), "high-dose") == []


def test_item_without_a_sourced_maximum_has_no_dose_check() -> None:
    assert catalogue()[SIMVASTATIN].max_daily_dose is None
    assert check(medicine(SIMVASTATIN, simvastatin=800)) == []


def test_ibuprofen_over_3200_mg_is_a_high_dose() -> None:
    assert [a.rule for a in check(medicine(IBUPROFEN, ibuprofen=3600))] == ["max-dose-ibuprofen"]
    assert check(medicine(IBUPROFEN, ibuprofen=3200)) == []
