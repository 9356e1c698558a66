"""Notes rules that need no AWS: note types, ages, search plans, references."""

from __future__ import annotations

import pytest

from expediente import records
from expediente.clinical import SearchSpec, date_bounds, plan_search
from expediente.context import RequestContext, TenantId
from expediente.errors import Invalid
from expediente.permissions import Role
from functions.notes import compositions
from functions.notes.note_types import NOTE_TYPES, SECTIONS


def _ctx(*roles: Role, patient_id: str | None = None) -> RequestContext:
    return RequestContext(tenant=TenantId("t-abcdefghij"), user_id="u", username="u", roles=frozenset(roles),
                          clinic_ids=(), clinic=None, practitioner_id=None, patient_id=patient_id,
                          request_id="r", source_ip="", user_agent="")


def test_every_required_section_is_a_declared_section():
    for kind in NOTE_TYPES.values():
        assert set(kind.required) <= set(SECTIONS), kind.kind
        assert kind.loinc.count("-") == 1


@pytest.mark.parametrize(("born", "on", "age"), [("1980-06-15", "2026-06-14", 45), ("1980-06-15", "2026-06-15", 46),
                                                 ("2000-02-29", "2026-02-28", 25), ("2000-02-29", "2026-03-01", 26)])
def test_age_on_the_note_date(born, on, age):
    assert compositions.age_on(born, on) == age


def test_date_bounds_follow_fhir_prefixes():
    assert date_bounds("date", "2026-05") == ("2026-05", "2026-05")
    low, high = date_bounds("date", "lt2026-05-10")
    assert low is None and "2026-05-09T23:59" < f"{high}\uffff" < "2026-05-10"
    low, high = date_bounds("date", "gt2026")
    assert high is None and "2026-12-31T23:59" < low < "2027"
    with pytest.raises(Invalid):
        date_bounds("date", "sa2026")


SPEC = SearchSpec(resource_type="Composition", facets={"patient": "patient", "encounter": "encounter"},
                  filters={"type": "type"}, references={"patient": "Patient"},
                  resource_filters={"status": lambda r: str(r.get("status"))})


def test_a_search_reads_one_facet_and_filters_on_the_rest():
    plan = plan_search(_ctx(Role.PHYSICIAN), SPEC, {"patient": "Patient/p1", "encounter": "e1", "type": "11506-3",
                                                   "status": "final"})
    assert (plan.facet, plan.value) == ("patient", "p1")
    assert plan.keep({"encounter": "e1", "type": "11506-3"})
    assert not plan.keep({"encounter": "e2", "type": "11506-3"})
    assert plan.matches({"status": "final"}) and not plan.matches({"status": "preliminary"})


def test_a_search_without_a_key_parameter_is_refused_naming_the_choices():
    with pytest.raises(Invalid, match="patient, encounter"):
        plan_search(_ctx(Role.PHYSICIAN), SPEC, {"type": "11506-3"})


def test_the_patient_role_only_ever_searches_its_own_record():
    own = plan_search(_ctx(Role.PATIENT, patient_id="me"), SPEC, {})
    assert (own.value, own.empty) == ("me", False)
    other = plan_search(_ctx(Role.PATIENT, patient_id="me"), SPEC, {"patient": "someone"})
    assert other.empty


def test_references_are_relative_and_of_the_expected_type():
    assert records.parse("Condition/abc/_history/3", where="x", types=("Condition",)) == records.Ref(
        "Condition", "abc", 3)
    for bad in ("http://other/Condition/abc", "Condition/", "Patient/abc", 7):
        with pytest.raises(Invalid):
            records.parse(bad, where="x", types=("Condition",))
