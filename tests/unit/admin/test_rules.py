"""Admin rules without AWS: CLUES, cédula, names, user specs, audit date queries."""

from __future__ import annotations

import pytest

from expediente.errors import Invalid, Unprocessable
from functions.admin import rules
from functions.admin.rules import ORGANIZATION, PRACTITIONER, Placement, UserSpec
from infra import definitions

PLACE = Placement(tenant="t-abcdefghij", chain_id="chain-1", resource_id="org-1")
CLUES = "urn:oid:2.16.840.1.113883.4.631"
CEDULA = "urn:oid:2.16.840.1.113883.3.215.12.18"


def clinic(clues: str = "HGIMB000151", **extra):
    return {"resourceType": "Organization", "name": "Clínica", "identifier": [{"system": CLUES, "value": clues}],
            **extra}


def doctor(cedula: str = "1234567", **extra):
    return {"resourceType": "Practitioner", "identifier": [{"system": CEDULA, "value": cedula}],
            "name": [{"family": "Pérez", "given": ["Ana"]}], **extra}


def expression(exc: pytest.ExceptionInfo[Invalid]) -> str | None:
    return exc.value.expression


@pytest.mark.parametrize(
    ("clues", "message"),
    [("HGIMB00015", "11 characters"), ("ZZIMB000151", "state ZZ"), ("NEIMB000151", "state NE"),
     ("HG1MB000151", "11 characters")],
)
def test_a_bad_clues_names_the_field(clues, message):
    with pytest.raises(Invalid, match=message) as exc:
        ORGANIZATION.normalize(clinic(clues), PLACE, is_chain=False)
    assert expression(exc) == "Organization.identifier[0].value"


def test_clues_is_canonical_upper_case_and_the_clinic_joins_the_chain():
    resource = ORGANIZATION.normalize(clinic(" hgimb000151 "), PLACE, is_chain=False)
    assert resource["identifier"] == [{"system": CLUES, "value": "HGIMB000151"}]
    assert resource["partOf"] == {"reference": "Organization/chain-1"}
    assert resource["active"] is True
    assert resource["type"][0]["coding"][0]["code"] == "prov"
    assert ORGANIZATION.indexed(resource).unique.value == "HGIMB000151"


def test_a_clinic_needs_one_clues_and_its_own_chain():
    with pytest.raises(Invalid) as exc:
        ORGANIZATION.normalize({"resourceType": "Organization", "name": "X"}, PLACE, is_chain=False)
    assert expression(exc) == "Organization.identifier"
    two = clinic(identifier=[{"system": CLUES, "value": "HGIMB000151"}, {"system": CLUES, "value": "HGIMB000163"}])
    with pytest.raises(Invalid) as exc:
        ORGANIZATION.normalize(two, PLACE, is_chain=False)
    assert expression(exc) == "Organization.identifier[1]"
    with pytest.raises(Unprocessable):
        ORGANIZATION.normalize(clinic(partOf={"reference": "Organization/other"}), PLACE, is_chain=False)


def test_the_tenant_identifier_is_the_servers_to_assign():
    forged = clinic(identifier=[{"system": CLUES, "value": "HGIMB000151"},
                                {"system": rules.TENANT_SYSTEM, "value": "t-other00000"}])
    resource = ORGANIZATION.normalize(forged, PLACE, is_chain=False)
    assert all(i["system"] != rules.TENANT_SYSTEM for i in resource["identifier"])
    chain = ORGANIZATION.normalize({"resourceType": "Organization", "name": "Cadena"}, PLACE, is_chain=True)
    assert chain["identifier"] == [{"system": rules.TENANT_SYSTEM, "value": "t-abcdefghij"}]
    with pytest.raises(Unprocessable):
        ORGANIZATION.normalize({"resourceType": "Organization", "name": "Cadena",
                                "partOf": {"reference": "Organization/x"}}, PLACE, is_chain=True)


def test_fhir_types_are_normalized_not_stored_as_sent():
    resource = ORGANIZATION.normalize(clinic(active="true"), PLACE, is_chain=False)
    assert resource["active"] is True


@pytest.mark.parametrize("cedula", ["123456", "123456789", "12A4567", " "])
def test_a_bad_cedula_names_the_field(cedula):
    with pytest.raises(Invalid, match="Cédula profesional") as exc:
        PRACTITIONER.normalize(doctor(cedula), PLACE)
    assert expression(exc) == "Practitioner.identifier[0].value"


def test_specialty_cedula_and_issuer_are_checked():
    body = doctor(qualification=[{"code": {"text": "Cardiología"}, "issuer": {"display": "UNAM"},
                                  "identifier": [{"system": CEDULA, "value": "12"}]}])
    with pytest.raises(Invalid) as exc:
        PRACTITIONER.normalize(body, PLACE)
    assert expression(exc) == "Practitioner.qualification[0].identifier[0].value"
    body["qualification"][0]["issuer"] = {}
    with pytest.raises(Invalid) as exc:
        PRACTITIONER.normalize(body, PLACE)
    assert expression(exc) == "Practitioner.qualification[0].issuer.display"


def test_the_official_name_is_the_one_checked_and_indexed():
    body = doctor()
    body["name"] = [{"use": "nickname", "given": ["Anita"]}, {"use": "official", "family": "Núñez", "given": ["Ana"]}]
    resource = PRACTITIONER.normalize(body, PLACE)
    terms = PRACTITIONER.indexed(resource).terms
    assert ("family", "NUNEZ") in terms
    assert ("given", "ANA") in terms
    assert ("name", "ANA") in terms
    body["name"][1]["family"] = " "
    with pytest.raises(Invalid) as exc:
        PRACTITIONER.normalize(body, PLACE)
    assert expression(exc) == "Practitioner.name[1].family"


def test_search_terms_fold_case_accents_and_the_key_separator():
    assert rules.fold("  Clínica #1  Ñandú ") == "CLINICA 1 NANDU"  # the shared fold: ñ is typed as n
    q = ORGANIZATION.query({"name": "clínica"})
    assert (q.facet, q.prefix, q.identifier) == ("name", "CLINICA", None)
    q = ORGANIZATION.query({"partof": "Organization/chain-1", "name": "a"})
    assert q.facet == "partof:chain-1"
    q = ORGANIZATION.query({"identifier": "urn:other|HGIMB000151"})
    assert q.empty


@pytest.mark.parametrize("params", [{"partOf": "x"}, {"name": "a,b"}, {"active": "yes"}, {"partof": "Org/../x"}])
def test_unsupported_or_malformed_search_parameters_are_400(params):
    with pytest.raises(Invalid):
        ORGANIZATION.query(params)


# -- users ----------------------------------------------------------------------------------------


def test_signing_roles_and_roles_match_the_definitions():
    assert frozenset(definitions.SIGNING_ROLES) == rules.SIGNING_ROLES
    assert set(rules.ROLES) == set(definitions.ROLES)


@pytest.mark.parametrize("role", sorted(definitions.SIGNING_ROLES))
def test_signing_roles_need_a_practitioner(role):
    with pytest.raises(Invalid) as exc:
        rules.check_spec(UserSpec(role, ("HGIMB000151",), None, None))
    assert expression(exc) == "practitioner_id"


def test_new_user_rules_name_the_field():
    base = {"username": "Ana.Lopez", "email": "ana@example.com", "role": "reception", "clinic_ids": ["hgimb000151"]}
    user = rules.new_user(base)
    assert user.username == "ana.lopez"
    assert user.spec.clinic_ids == ("HGIMB000151",)
    cases = [({"role": "root"}, "role"), ({"email": "nope"}, "email"), ({"username": "a"}, "username"),
             ({"clinic_ids": []}, "clinic_ids"), ({"clinic_ids": ["HGIMB000151", 7]}, "clinic_ids[1]"),
             ({"tenant_id": "t-x"}, "tenant_id"), ({"patient_id": "p1"}, "patient_id")]
    for change, where in cases:
        with pytest.raises(Invalid) as exc:
            rules.new_user({**base, **change})
        assert expression(exc) == where, change
    with pytest.raises(Invalid) as exc:
        rules.new_user({**base, "email": "secret.person@example"})
    assert "secret.person" not in exc.value.message


def test_changed_user_merges_onto_the_current_spec():
    current = UserSpec("physician", ("HGIMB000151",), "prac-1", None)
    changed = rules.changed_user({"clinic_ids": ["HGIMB000163"], "enabled": False}, current)
    assert changed == UserSpec("physician", ("HGIMB000163",), "prac-1", None, enabled=False)
    with pytest.raises(Invalid) as exc:
        rules.changed_user({"practitioner_id": None}, current)
    assert expression(exc) == "practitioner_id"
    with pytest.raises(Invalid):
        rules.changed_user({}, current)
    with pytest.raises(Invalid) as exc:
        rules.changed_user({"patient_id": "p-1"}, current)
    assert expression(exc) == "patient_id"
    with pytest.raises(Invalid) as exc:
        rules.changed_user({"email": "x@example.com"}, current)
    assert expression(exc) == "email"


# -- AuditEvent queries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2025", "2025-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z"),
        ("2025-12", "2025-12-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z"),
        ("2024-02-29", "2024-02-29T00:00:00.000Z", "2024-03-01T00:00:00.000Z"),
        ("2025-01-31T18:00-06:00", "2025-02-01T00:00:00.000Z", "2025-02-01T00:01:00.000Z"),
        ("2025-01-31T18:00:05Z", "2025-01-31T18:00:05.000Z", "2025-01-31T18:00:06.000Z"),
        ("2025-01-31T18:00:05.25Z", "2025-01-31T18:00:05.250Z", "2025-01-31T18:00:05.251Z"),
    ],
)
def test_a_date_covers_its_precision(value, low, high):
    assert rules.date_range(value) == ("eq", low, high)


def test_prefixes_become_sort_key_bounds():
    q = rules.audit_query({"date": "ge2025-01-10,le2025-01-31"})
    assert (q.low, q.high) == ("2025-01-10T00:00:00.000Z", "2025-02-01T00:00:00.000Z")
    q = rules.audit_query({"date": "gt2025-01-31"})
    assert (q.low, q.high) == ("2025-02-01T00:00:00.000Z", None)
    q = rules.audit_query({"date": "lt2025-01-10", "_sort": "date"})
    assert (q.low, q.high, q.ascending) == (None, "2025-01-10T00:00:00.000Z", True)
    assert rules.audit_query({"date": "ge2025-02-01,le2025-01-01"}).impossible
    assert rules.audit_query({"patient": "Patient/abc"}).patient == "abc"
    assert not rules.audit_query({}).ascending


@pytest.mark.parametrize("value", ["2025-13", "2025-02-30", "ap2025", "2025-01-01T10:00", "2025-01-01,2025-01-02,x"])
def test_bad_dates_are_400(value):
    with pytest.raises(Invalid) as exc:
        rules.audit_query({"date": value})
    assert expression(exc) == "date"
