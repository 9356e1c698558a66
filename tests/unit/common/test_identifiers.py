import pytest

from expediente import identifiers as ids
from expediente.errors import Invalid
from tests.support.curp import make_curp


def test_valid_curp_is_canonicalized():
    curp = make_curp()
    assert ids.validate_curp(f" {curp.lower()} ") == curp


def test_curp_parts_are_decoded():
    curp = make_curp(birth="850310", sex="M", state="JC")
    assert ids.curp_birth_date(curp).isoformat() == "1985-03-10"
    assert ids.curp_gender(curp) == "female"
    assert ids.curp_birth_state(curp) == "14"


def test_born_abroad_and_sex_x_are_valid():
    assert ids.curp_birth_state(ids.validate_curp(make_curp(state="NE", sex="X"))) == "NE"


def test_post_2000_curp_uses_a_letter_differentiator():
    curp = make_curp(birth="050101", differentiator="A")
    assert ids.curp_birth_date(ids.validate_curp(curp)).year == 2005


@pytest.mark.parametrize("value", ["ABC", "XXXX999999XXXXXX99", make_curp()[:-1] + "X"])
def test_bad_curps_raise(value):
    with pytest.raises(Invalid):
        ids.validate_curp(value)


def test_clues_and_cedula():
    assert ids.validate_clues("hgimb000151") == "HGIMB000151"
    for bad in ("HGIMB00015", "ZZIMB000151", "HG1MB000151"):
        with pytest.raises(Invalid):
            ids.validate_clues(bad)
    assert ids.validate_cedula("1234567") == "1234567"
    with pytest.raises(Invalid):
        ids.validate_cedula("12345")


def test_catalogues_are_loaded_from_the_shipped_files():
    assert ids.states()["09"] == "DF"
    assert ("13", "048") in ids.municipalities()  # Hidalgo, Pachuca de Soto
    assert {"MEX", "USA", "NND"} <= ids.nationalities()


def test_fold_ignores_case_and_accents():
    assert ids.fold("  José   Núñez ") == "JOSE NUNEZ"
