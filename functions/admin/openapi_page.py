"""The OpenAPI description the admin function serves, and the same as a readable page.

``openapi.json`` beside this module is generated from the code by ``python -m tools.openapi`` (CI fails
when it is out of date). The page is rendered here from it, with no script or external asset.
"""

from __future__ import annotations

import html
import json
from functools import cache
from pathlib import Path
from typing import Any

DOCUMENT = Path(__file__).with_name("openapi.json")


@cache
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


@cache
def page() -> str:
    """Every operation grouped by tag: method, path, summary, parameters, and whether it needs a token."""
    spec = document()
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            by_tag.setdefault(operation["tags"][0], []).append((method.upper(), path, operation))
    e = html.escape
    sections = []
    for tag in sorted(by_tag):
        rows = []
        for method, path, operation in by_tag[tag]:
            params = ", ".join(f"<code>{e(p['name'])}</code>" for p in operation.get("parameters", [])
                               if p["in"] != "path")
            public = " <em>(no token)</em>" if operation.get("security") == [] else ""
            rows.append(f"<tr><td><b>{method}</b></td><td><code>{e(path)}</code>{public}</td>"
                        f"<td>{e(operation['summary'])}</td><td>{params}</td></tr>")
        sections.append(f"<h2 id='{e(tag)}'>{e(tag)}</h2><table><tr><th>method</th><th>path</th><th>what</th>"
                        f"<th>parameters</th></tr>{''.join(rows)}</table>")
    info = spec["info"]
    return ("<!doctype html><html lang='en'><meta charset='utf-8'><title>Expediente API</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}</style>"
            f"<h1>{e(info['title'])} {e(info['version'])}</h1><p>{e(info['description'])}</p>"
            "<p>Machine-readable: <a href='openapi.json'>openapi.json</a> (OpenAPI 3.0) and the FHIR "
            "<a href='fhir/metadata'>CapabilityStatement</a>.</p>"
            f"{''.join(sections)}</html>")
