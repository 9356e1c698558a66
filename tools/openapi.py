"""Generate the API's OpenAPI 3 description from the code: ``python -m tools.openapi [--check]``.

The paths and methods are the routes each function's resolver registers (``functions/<id>/handler.py``),
under the API Gateway resources ``infra/definitions.py`` gives that function; summaries come from the
route functions' docstrings, search parameters and operations from the CapabilityStatement
(``functions/admin/capability.py``). The result is written to ``functions/admin/openapi.json`` (the
admin function serves it at ``GET /openapi.json`` and as a page at ``GET /docs``); ``--check`` exits 1
when the file differs from what the code describes (``tests/unit/test_openapi.py`` runs it in CI).
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "functions" / "admin" / "openapi.json"
_PARAM = re.compile(r"<(\w+)>")
FHIR_JSON = "application/fhir+json"
ER7 = "x-application/hl7-v2+er7"


def _path(rule: str) -> str:
    return _PARAM.sub(r"{\1}", rule.replace("\\$", "$"))


def _summary(func: Any, method: str, path: str) -> tuple[str, str]:
    doc = " ".join((func.__doc__ or "").split()) if func.__name__ != "<lambda>" else ""
    first = doc.split(". ")[0].rstrip(".") if doc else ""
    return (first[:120] or _generic(method, path)), doc


def _generic(method: str, path: str) -> str:
    """What a route without a docstring does, from the FHIR REST pattern it follows."""
    resource = re.match(r"/fhir/(\w+)", path)
    kind = resource[1] if resource else path
    patterns = [(r"/_history/\{\w+\}$", "GET", f"Read one version of a {kind} (vread)"),
                (r"/_history$", "GET", f"The versions of a {kind}, newest first (history)"),
                (r"/fhir/\w+/\{\w+\}$", "GET", f"Read a {kind}"),
                (r"/fhir/\w+/\{\w+\}$", "PUT", f"Update a {kind} (If-Match)"),
                (r"/fhir/\w+/\{\w+\}$", "DELETE", f"Refused: {kind} resources are never deleted"),
                (r"/fhir/\w+$", "GET", f"Search {kind}"),
                (r"/fhir/\w+$", "POST", f"Create a {kind}")]
    return next((text for pattern, verb, text in patterns if verb == method and re.search(pattern, path)),
                f"{method} {path}")


def _public(path: str) -> bool:
    from infra import definitions

    public = {_api_path(p) for fn in definitions.FUNCTIONS for p in fn.public_routes}
    return path in public or any(re.fullmatch(re.sub(r"\{[^/]+\}", "[^/]+", p), path) for p in public)


def _api_path(resource: str) -> str:
    return resource.replace("{proxy+}", "{proxy}")


def _capabilities() -> dict[str, Any]:
    from functions.admin import capability

    return {r.type: r for r in capability.RESOURCES}


def _parameters(path: str, method: str, capabilities: dict[str, Any]) -> list[dict[str, Any]]:
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
              for name in re.findall(r"\{(\w+)\}", path)]
    match = re.fullmatch(r"/fhir/(\w+)", path)
    if match and method == "get" and match[1] in capabilities:
        params += [{"name": p.name, "in": "query", "required": False, "description": p.documentation,
                    "schema": {"type": "integer" if p.type == "number" else "string"}}
                   for p in capabilities[match[1]].search_params]
    if method in ("put",) or path.endswith(("$sign", "$status")):
        params.append({"name": "If-Match", "in": "header", "required": True, "schema": {"type": "string"},
                       "description": 'The version replaced, as its ETag (W/"3"); 428 without it, 412 when stale'})
    if method == "post":
        params.append({"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
                       "description": "A retry with the same key and body returns the first answer"})
    return params


def _content(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _typed(*resource_types: str) -> dict[str, Any]:
    """A FHIR resource of one of ``resource_types`` (the JSON Schema the responses are checked against)."""
    return {"allOf": [_ref("Resource"), {"properties": {"resourceType": {"enum": list(resource_types)}}}]}


# Every error: an OperationOutcome (FHIR JSON from the functions, API Gateway's reshaped responses and the
# local front door; plain JSON from the WAF's block responses).
ERRORS: dict[str, Any] = {"default": {
    "description": "An OperationOutcome with the HTTP status",
    "content": {**_content(FHIR_JSON, _ref("OperationOutcome")),
                **_content("application/json", _ref("OperationOutcome"))},
}}
_BINARY = {"type": "string", "format": "binary"}
_DICOM_JSON = {"type": "array", "items": {"type": "object"}}


def _success(method: str, path: str) -> dict[str, Any]:
    """The documented success responses of one route: status, media types and schema, as precise as the code is."""
    ok = "Success"
    if path == "/hl7v2":
        return {"200": {"description": "The ACK (or a batch of ACKs) in ER7",
                        "content": _content(ER7, {"type": "string"})}}
    if path == "/docs":
        return {"200": {"description": ok, "content": _content("text/html", {"type": "string"})}}
    if path == "/openapi.json":
        return {"200": {"description": ok, "content": _content("application/json", {
            "type": "object", "required": ["openapi", "paths"]})}}
    if path.startswith("/receta/"):
        return {"200": {"description": "HTML for a browser (Accept: text/html), JSON otherwise",
                        "content": {**_content("application/json", {"type": "object"}),
                                    **_content("text/html", {"type": "string"})}}}
    if path.startswith("/admin/"):
        return {("201" if method == "post" and path == "/admin/users" else "200"): {
            "description": ok, "content": _content("application/json", {"type": "object"})}}
    if path.endswith("/thumbnail"):
        return {"200": {"description": "A PNG", "content": _content("image/png", _BINARY)}}
    if path.endswith("/instances/{sop_uid}"):
        return {"303": {"description": "A redirect to a short-lived presigned URL of the object",
                        "headers": {"Location": {"schema": {"type": "string"}}}}}
    if path.startswith("/dicomweb/"):
        return {"200": {"description": "DICOM JSON (PS3.18 F.2)", "content": _content("application/dicom+json",
                                                                                       _DICOM_JSON)}}
    if path.endswith("/$print"):
        return {"200": {"description": "The printable document",
                        "content": {**_content("application/pdf", _BINARY),
                                    **_content("text/html", {"type": "string"})}}}
    if path.endswith("/$public-key"):
        return {"200": {"description": ok, "content": {**_content(FHIR_JSON, _typed("Parameters")),
                                                       **_content("application/x-pem-file", {"type": "string"})}}}
    resource = re.match(r"/fhir/(\w+)", path)
    kind = resource[1] if resource else ""
    if kind == "metadata":
        schema = _typed("CapabilityStatement")
    elif "$" in path or not kind:
        schema = _ref("Resource")
    elif method == "get" and (re.fullmatch(r"/fhir/\w+", path) or path.endswith("/_history")):
        schema = _typed("Bundle")
    else:
        schema = _typed(kind)
    success = {"200": {"description": ok, "content": _content(FHIR_JSON, schema)}}
    if method == "post" and re.fullmatch(r"/fhir/\w+", path):
        # 201 created; 200 for a conditional create that found its match or a replayed Idempotency-Key.
        success["201"] = {"description": "Created", "content": _content(FHIR_JSON, schema)}
    return success


def _operation(route: Any, function_id: str, capabilities: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    method = route.method.lower()
    path = _path(route.path)
    summary, description = _summary(route.func, route.method, path)
    resource = re.match(r"/fhir/(\w+)", path)
    operation: dict[str, Any] = {
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{method}{path}").strip("_"),
        "summary": summary,
        "tags": [resource[1] if resource else path.split("/")[1]],
        "parameters": _parameters(path, method, capabilities),
        "responses": {**_success(method, path), **ERRORS},
    }
    if description and description != summary:
        operation["description"] = description
    if method in ("post", "put"):
        content_type = ER7 if path.startswith("/hl7v2") else FHIR_JSON
        schema = {"type": "string"} if content_type == ER7 else {"$ref": "#/components/schemas/Resource"}
        operation["requestBody"] = {"required": False, "content": {content_type: {"schema": schema}}}
    if _public(path):
        operation["security"] = []
    return path, method, operation


def document() -> dict[str, Any]:
    """The OpenAPI description of every route of every function (deterministic)."""
    from functions.admin import capability
    from infra import definitions

    capabilities = _capabilities()
    paths: dict[str, dict[str, Any]] = {}
    for definition in definitions.FUNCTIONS:
        if not (definition.routes or definition.public_routes):
            continue  # a scheduled job, no API
        handler = importlib.import_module(f"functions.{definition.id}.handler")
        app = handler.app
        for route in (*app._static_routes, *app._dynamic_routes):
            path, method, operation = _operation(route, definition.id, capabilities)
            paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Expediente API",
            "version": capability.SOFTWARE_VERSION,
            "description": "FHIR R4 (application/fhir+json) under /fhir, HL7 v2 under /hl7v2, DICOMweb under "
                           "/dicomweb. Bearer: the Cognito ID token. Errors are FHIR OperationOutcome. The FHIR "
                           "CapabilityStatement at /fhir/metadata details every resource, search parameter and "
                           "operation.",
        },
        "servers": [{"url": "/"}],
        "security": [{"cognitoIdToken": []}],
        "paths": {path: dict(sorted(methods.items())) for path, methods in sorted(paths.items())},
        "components": {
            "securitySchemes": {"cognitoIdToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Resource": {"type": "object", "required": ["resourceType"],
                             "properties": {"resourceType": {"type": "string"}, "id": {"type": "string"}},
                             "additionalProperties": True,
                             "description": "A FHIR R4 resource (or Bundle, or Parameters)"},
                "OperationOutcome": {"type": "object", "required": ["resourceType", "issue"],
                                     "properties": {"resourceType": {"type": "string", "enum": ["OperationOutcome"]},
                                                    "issue": {"type": "array", "minItems": 1, "items": {
                                                        "type": "object", "required": ["severity", "code"],
                                                        "properties": {
                                                            "severity": {"enum": ["fatal", "error", "warning",
                                                                                  "information"]},
                                                            "code": {"type": "string", "minLength": 1},
                                                            "diagnostics": {"type": "string"}}}}}},
            },
        },
    }


def rendered() -> str:
    return json.dumps(document(), indent=1, ensure_ascii=False, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the checked-in file is out of date")
    options = parser.parse_args(argv)
    text = rendered()
    if options.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            sys.stderr.write(f"{OUTPUT.relative_to(ROOT)} is out of date: run python -m tools.openapi\n")
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
