import csv
import subprocess
import sys
from pathlib import Path

import pytest

from expediente import loinc
from expediente.errors import Invalid

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "layers" / "common" / "expediente" / "data" / "loinc_lab.csv"
WHERE = "Observation.code.coding[0].code"

# Critical values in shared/design/domain.md, each with the LOINC long common name it must carry.
CRITICAL = {
    "2823-3": "Potassium [Moles/volume] in Serum or Plasma",
    "2951-2": "Sodium [Moles/volume] in Serum or Plasma",
    "2345-7": "Glucose [Mass/volume] in Serum or Plasma",
    "17861-6": "Calcium [Mass/volume] in Serum or Plasma",
    "718-7": "Hemoglobin [Mass/volume] in Blood",
    "777-3": "Platelets [#/volume] in Blood by Automated count",
    "6690-2": "Leukocytes [#/volume] in Blood by Automated count",
    "6301-6": "INR in Platelet poor plasma by Coagulation assay",
    "2744-1": "pH of Arterial blood",
    "2019-8": "Carbon dioxide [Partial pressure] in Arterial blood",
    "2524-7": "Lactate [Moles/volume] in Serum or Plasma",
    "10839-9": "Troponin I.cardiac [Mass/volume] in Serum or Plasma",
}


def _rows():
    with DATA.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(("code", "name"), CRITICAL.items())
def test_critical_value_codes_are_in_the_catalogue(code, name):
    found = loinc.lookup(code)
    assert found is not None
    assert found.name == name
    assert not found.panel
    assert loinc.lab_test(f" {code} ", where=WHERE) == found


def test_critical_codes_carry_loinc_example_units():
    assert loinc.lookup("2823-3").units == ("mmol/L",)
    assert loinc.lookup("718-7").units == ("g/dL",)
    assert loinc.lookup("6690-2").units == ("10*3/uL",)
    assert loinc.lookup("6301-6").units == ("{INR}",)


def test_coding_displays_spanish_when_present_else_english():
    potassium = loinc.lookup("2823-3")
    expected = potassium.name_es or potassium.name
    assert potassium.coding() == {"system": "http://loinc.org", "code": "2823-3", "display": expected}
    for test in loinc.catalogue():
        assert test.coding()["display"] == (test.name_es if test.name_es else test.name)


def test_spanish_name_comes_only_with_its_official_variant_source():
    for row in _rows():
        assert bool(row["spanish_name"]) == bool(row["spanish_source"]), row["loinc"]
        if row["spanish_source"]:
            assert row["spanish_source"] in {"esMX", "esES", "esAR"}, row["loinc"]


def test_unknown_valid_code_is_refused_naming_it():
    assert loinc.is_valid_code("1-8")
    assert loinc.lookup("1-8") is None
    with pytest.raises(Invalid) as raised:
        loinc.lab_test("1-8", where=WHERE)
    assert "1-8" in raised.value.message
    assert "not in the laboratory catalogue" in raised.value.message
    assert raised.value.expression == WHERE


@pytest.mark.parametrize("code", ["2823-4", "2823", "K+", "2823_3", "12345678-1", "2823-3a"])
def test_malformed_code_is_refused_naming_it(code):
    with pytest.raises(Invalid) as raised:
        loinc.lab_test(code, where=WHERE)
    assert code in raised.value.message
    assert "is not a LOINC code" in raised.value.message
    assert raised.value.expression == WHERE


def test_wrong_check_digit_message_gives_the_right_one():
    with pytest.raises(Invalid, match=r"check digit of 2823 is 3"):
        loinc.lab_test("2823-4", where=WHERE)


@pytest.mark.parametrize("code", [None, "", "   "])
def test_missing_code_is_refused(code):
    with pytest.raises(Invalid, match="not a LOINC code"):
        loinc.lab_test(code, where=WHERE)


def test_check_digit_accepts_every_catalogue_code():
    for row in _rows():
        body, digit = row["loinc"].split("-")
        assert loinc.check_digit(body) == int(digit), row["loinc"]
        assert loinc.is_valid_code(row["loinc"])


def test_check_digit_rejects_mutated_codes():
    for row in _rows():
        body, digit = row["loinc"].split("-")
        assert not loinc.is_valid_code(f"{body}-{(int(digit) + 1) % 10}"), row["loinc"]
    # Transposing two different adjacent digits changes the Mod 10 check digit.
    assert loinc.check_digit("2823") == 3
    assert not loinc.is_valid_code("2832-3")


def test_check_digit_refuses_a_non_numeric_body():
    with pytest.raises(ValueError, match="not a LOINC code body"):
        loinc.check_digit("28a3")


def test_search_finds_potassium_by_prefix_ignoring_case_and_accents():
    for query in ("potas", "POTAS", "pótas", "potassium serum"):
        assert "2823-3" in [test.code for test in loinc.search(query, limit=50)], query


def test_search_in_spanish_when_spanish_names_are_present():
    if not any(test.name_es for test in loinc.catalogue()):
        pytest.skip("no official LOINC Spanish linguistic variant is shipped in loinc_lab.csv")
    assert "2823-3" in [test.code for test in loinc.search("potasio", limit=50)]


def test_search_respects_limit_and_ignores_empty_queries():
    assert len(loinc.search("in", limit=3)) == 3
    assert loinc.search("") == []
    assert loinc.search("  ,  ") == []
    assert loinc.search("potas", limit=0) == []


def test_search_needs_every_word():
    found = loinc.search("hemoglobin blood")
    assert found
    assert all("hemoglobin" in test.name.lower() and "blood" in test.name.lower() for test in found)


def test_catalogue_size_panels_and_no_duplicates():
    rows = _rows()
    codes = [row["loinc"] for row in rows]
    assert len(rows) >= 200
    assert len(codes) == len(set(codes))
    assert len(loinc.catalogue()) == len(rows)
    panels = [test for test in loinc.catalogue() if test.panel]
    assert len(panels) >= 20
    assert all("panel" in test.name.lower() for test in panels)
    assert loinc.lookup("58410-2").panel  # CBC panel - Blood by Automated count


def test_csv_header_and_panel_values():
    rows = _rows()
    assert list(rows[0]) == ["loinc", "long_common_name", "spanish_name", "spanish_source", "units", "system",
                             "class", "panel"]
    assert {row["panel"] for row in rows} <= {"Order", "Both", ""}
    assert all(row["long_common_name"] == row["long_common_name"].strip() for row in rows)


def test_catalogue_version_is_a_string():
    assert isinstance(loinc.CATALOGUE_VERSION, str)
    assert loinc.CATALOGUE_VERSION


def test_importing_the_module_does_not_read_the_csv():
    probe = ("from expediente import loinc; "
             "print(loinc._catalogue.cache_info().currsize, loinc._index.cache_info().currsize)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={"PYTHONPATH": f"{ROOT / 'layers' / 'common'}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "0 0"
