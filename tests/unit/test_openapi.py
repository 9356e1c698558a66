"""The OpenAPI description is generated from the code, checked in, valid, and complete."""

from __future__ import annotations

import json

from openapi_spec_validator import validate

from infra import definitions
from tools import openapi


def test_the_checked_in_description_is_what_the_code_describes() -> None:
    assert openapi.main(["--check"]) == 0, "run: python -m tools.openapi"


def test_the_description_is_valid_openapi_3() -> None:
    validate(json.loads(openapi.OUTPUT.read_text(encoding="utf-8")))


def test_every_api_gateway_resource_of_every_function_has_operations() -> None:
    paths = list(openapi.document()["paths"])
    for function in definitions.FUNCTIONS:
        for resource in (*function.routes, *function.public_routes):
            prefix = resource.replace("/{proxy+}", "").split("{")[0].rstrip("/")
            assert any(p == prefix or p.startswith(prefix + "/") for p in paths), (function.id, resource)


def test_only_the_public_routes_need_no_token() -> None:
    spec = openapi.document()
    open_paths = {path for path, methods in spec["paths"].items() for op in methods.values()
                  if op.get("security") == []}
    assert open_paths == {"/fhir/metadata", "/openapi.json", "/docs", "/receta/{token}"}
