"""The CapabilityStatement: valid FHIR, and true to the permission table and the routes."""

from __future__ import annotations

from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from expediente.permissions import PERMISSIONS, Interaction
from functions.admin.capability import RESOURCES, capability_statement
from infra import definitions

# FHIR interaction code -> the permission table's interaction.
_PERMISSION = {"read": Interaction.READ, "vread": Interaction.VREAD, "history-instance": Interaction.HISTORY,
               "search-type": Interaction.SEARCH, "create": Interaction.CREATE, "update": Interaction.UPDATE}


def test_statement_is_a_valid_r4_capability_statement():
    statement = capability_statement("https://api.example.test/prod")
    model = CapabilityStatement.model_validate(statement)
    assert model.fhirVersion == "4.0.1"
    assert model.kind == "instance"
    assert "json" in model.format
    assert "application/fhir+json" in model.format
    assert statement["implementation"]["url"] == "https://api.example.test/prod/fhir"


def test_patient_capabilities_are_declared():
    patient = next(r for r in capability_statement("")["rest"][0]["resource"] if r["type"] == "Patient")
    assert [i["code"] for i in patient["interaction"]] == ["read", "vread", "history-instance", "search-type",
                                                          "create", "update"]
    assert patient["conditionalCreate"] is True
    assert patient["versioning"] == "versioned-update"
    assert {p["name"] for p in patient["searchParam"]} == {"identifier", "family", "given", "name", "birthdate",
                                                           "gender", "active", "_count"}
    assert [op["name"] for op in patient["operation"]] == ["merge", "everything", "arco-cancel"]
    assert patient["conditionalDelete"] == "not-supported"


def test_every_declared_interaction_is_granted_to_some_role():
    for resource in RESOURCES:
        grants = PERMISSIONS[resource.type]
        for code in resource.interactions:
            assert any(_PERMISSION[code] in granted for granted in grants.values()), (resource.type, code)
        for operation in resource.operations:
            assert any(Interaction(f"${operation.name}") in granted for granted in grants.values())


def test_every_declared_resource_has_a_route():
    routes = {route for fn in definitions.FUNCTIONS for route in fn.routes}
    for resource in RESOURCES:
        assert f"/fhir/{resource.type}" in routes, resource.type
    assert "/fhir/metadata" in definitions.function("admin").public_routes


def test_admin_search_params_match_what_the_rules_accept():
    from functions.admin import rules

    declared = {r.type: {p.name for p in r.search_params} for r in RESOURCES}
    assert declared["Organization"] == rules.ORGANIZATION.search_params - {"_page"}
    assert declared["Practitioner"] == rules.PRACTITIONER.search_params - {"_page"}
    assert declared["AuditEvent"] == rules.AUDIT_PARAMS - {"_page"}
