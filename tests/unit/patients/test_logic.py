"""Patient rules without AWS: NOM-024 normalization, search parsing, update and merge rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from expediente.context import RequestContext, TenantId
from expediente.errors import Conflict, Invalid, NotFound, PreconditionFailed, Unprocessable
from expediente.permissions import Role
from expediente.store import Stored
from functions.patients import logic, search
from tests.integration.patients.conftest import patient_body
from tests.support.curp import make_curp

CTX = RequestContext(tenant=TenantId("t-unit"), user_id="u", username="u", roles=frozenset({Role.RECEPTION}),
                     clinic_ids=(), clinic=None, practitioner_id=None, patient_id=None, request_id="r",
                     source_ip="", user_agent="")


class MemoryRepo:
    """What the DynamoDB repository guarantees, in memory."""

    def __init__(self):
        self.rows: dict[str, Stored] = {}
        self.curps: dict[str, str] = {}

    def get(self, ctx, pid):
        return self.rows.get(pid)

    def find_by_curp(self, ctx, curp):
        return self.curps.get(curp)

    def find_by_folio(self, ctx, folio):
        return None

    def create(self, ctx, pid, resource, demo, now, extra=()):
        self.rows[pid] = Stored(resource, 1, now)
        if demo.curp:
            self.curps[demo.curp] = pid

    def update(self, ctx, pid, resource, demo, previous, old, now, extra=()):
        self.rows[pid] = Stored(resource, previous.version + 1, now)
        if demo.curp:
            self.curps[demo.curp] = pid

    def merge(self, ctx, source, target, now):
        for change in (source, target):
            self.rows[change.resource["id"]] = Stored(change.resource, change.previous.version + 1, now)


def clock():
    return datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_plain_family_is_the_first_surname_and_names_are_upper_cased():
    demo = logic.demographics(patient_body(None, family="de la Cruz", second=None, given=("ana sofía",)))
    assert demo.first_surname == "DE LA CRUZ"
    assert demo.second_surname is None
    assert demo.given == ("ANA SOFÍA",)


def test_name_parts_longer_than_50_are_refused():
    with pytest.raises(Invalid, match="50"):
        logic.demographics(patient_body(None, given=("A" * 51,)))


def test_curp_sex_letter_must_agree_with_gender():
    with pytest.raises(Invalid, match="female"):
        logic.demographics(patient_body(make_curp(sex="M"), gender="male"))


def test_unknown_nationality_key_is_refused():
    body = patient_body(None, extension=[{"url": "http://hl7.org/fhir/StructureDefinition/patient-nationality",
                                          "extension": [{"url": "code", "valueCodeableConcept": {
                                              "coding": [{"code": "XYZ"}]}}]}])
    with pytest.raises(Invalid, match="RENAPO"):
        logic.demographics(body)


def test_render_round_trips_through_demographics():
    body = patient_body(make_curp())
    demo = logic.demographics(body)
    resource = logic.render("p1", demo, body, version=1, now="2026-11-25T12:00:00.000Z")
    assert logic.demographics(resource) == demo


def test_update_needs_the_current_version():
    repo = MemoryRepo()
    saved = logic.create(CTX, patient_body(make_curp()), repo=repo, clock=clock, new_id=lambda: "p1")
    with pytest.raises(PreconditionFailed):
        logic.update(CTX, "p1", saved.resource, if_match=7, repo=repo, clock=clock)
    with pytest.raises(NotFound):
        logic.update(CTX, "nope", {**saved.resource, "id": "nope"}, if_match=1, repo=repo, clock=clock)
    assert logic.update(CTX, "p1", saved.resource, if_match=1, repo=repo, clock=clock).version == 2


def test_update_may_not_take_another_patients_curp():
    repo = MemoryRepo()
    a, b = make_curp(prefix="AAAA"), make_curp(prefix="BEBE")
    logic.create(CTX, patient_body(a), repo=repo, clock=clock, new_id=lambda: "p1")
    second = logic.create(CTX, patient_body(b), repo=repo, clock=clock, new_id=lambda: "p2").resource
    second["identifier"] = [{"system": "urn:oid:2.16.840.1.113883.4.629", "value": a}]
    with pytest.raises(Conflict):
        logic.update(CTX, "p2", second, if_match=1, repo=repo, clock=clock)


def test_merged_record_cannot_be_reactivated_or_merged_again():
    repo = MemoryRepo()
    logic.create(CTX, patient_body(make_curp()), repo=repo, clock=clock, new_id=lambda: "keep")
    logic.create(CTX, patient_body(None), repo=repo, clock=clock, new_id=lambda: "dupe")
    source, _ = logic.merge(CTX, "dupe", "keep", repo=repo, clock=clock)
    with pytest.raises(Unprocessable):
        logic.update(CTX, "dupe", {**source, "active": True}, if_match=2, repo=repo, clock=clock)
    with pytest.raises(Conflict):
        logic.merge(CTX, "dupe", "keep", repo=repo, clock=clock)


@pytest.mark.parametrize(
    ("params", "prefix", "filters"),
    [
        ({"family": "Gárcia"}, "F#GARCIA", ()),
        ({"given": "jo", "gender": "male"}, "G#JO", (("g", "=", "male"),)),
        ({"gender": "female", "active": "true"}, "S#female#", (("act", "=", True),)),
        ({}, "A#", ()),
    ],
)
def test_search_uses_the_first_parameter_as_key_and_the_rest_as_filters(params, prefix, filters):
    q = search.parse(params)
    assert q.key.prefix == prefix
    assert set(q.filters) >= set(filters)


def test_birthdate_prefixes_become_key_ranges():
    q = search.parse({"birthdate": "ge1985-03"})
    assert q.key.low == "B#1985-03-01"
    with pytest.raises(Invalid):
        search.parse({"birthdate": "sa1985"})
    with pytest.raises(Invalid):
        search.parse({"birthdate": "yesterday"})


def test_word_prefix_filter_matches_any_word():
    attrs = {"fam": " GARCIA LOPEZ", "giv": " JOSE LUIS JOSE LUIS"}
    assert search.matches(attrs, (("fam", "word-prefix", "LOP"),))
    assert not search.matches(attrs, (("fam", "word-prefix", "OPEZ"),))
    assert search.matches(attrs, (("fam|giv", "word-prefix", "LUI"),))
