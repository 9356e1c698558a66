"""FHIR R4 wire helpers: responses, searchset Bundles, paging and validation.

Resources are validated with ``fhir.resources`` R4B models, which are
wire-compatible with R4 for the resources Expediente uses. Paging uses opaque
continuation tokens (``_page``) that carry the DynamoDB start key; a token is
only accepted for the same query partition it came from, so it cannot be used
to read another tenant's keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from expediente.errors import Invalid
from expediente.settings import settings

FHIR_JSON = "application/fhir+json"


def etag(version: int) -> str:
    return f'W/"{version}"'


def parse_if_match(value: str | None) -> int | None:
    """The version named by an ``If-Match`` header (``W/"3"`` or ``"3"``), or None if absent."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise Invalid(f'If-Match must be a version ETag such as W/"1", got {value!r}')
    return int(text)


def page_size(params: Mapping[str, str]) -> int:
    """``_count`` bounded to the configured maximum (default when absent)."""
    raw = params.get("_count")
    cfg = settings()
    if raw is None or raw == "":
        return cfg.page_default
    if not raw.isdigit() or int(raw) < 1:
        raise Invalid(f"_count must be a positive integer, got {raw!r}", expression="_count")
    return min(int(raw), cfg.page_max)


def encode_page_token(start_key: Mapping[str, Any], fingerprint: str) -> str:
    payload = json.dumps({"k": start_key, "f": fingerprint}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_page_token(token: str | None, *, partition: str, fingerprint: str) -> dict[str, Any] | None:
    """The start key of a ``_page`` token, checked against the query it must continue."""
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        key = data["k"]
        key_pk: dict[str, Any] = next(iter(v for name, v in key.items() if name.endswith("pk")), {})
        ok = data["f"] == fingerprint and key_pk.get("S") == partition
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        ok = False
    if not ok:
        raise Invalid("_page is not a continuation token of this search", expression="_page")
    return dict(key)


def query_fingerprint(params: Mapping[str, str]) -> str:
    """A short digest of the search parameters a continuation token belongs to."""
    kept = sorted((k, v) for k, v in params.items() if k not in {"_page", "_count"})
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()[:16]


def searchset(
    *,
    base_url: str,
    path: str,
    params: Mapping[str, str],
    resources: Sequence[dict[str, Any]],
    next_token: str | None,
    total: int | None = None,
    included: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A searchset ``Bundle`` with ``self`` and ``next`` links.

    ``total`` is given when it is known exactly without reading beyond the page
    (the page is the last one) or when the client asked ``_total=accurate``.
    """
    kept = {k: v for k, v in params.items() if k != "_page"}
    link = [{"relation": "self", "url": f"{base_url}{path}{'?' + urlencode(kept) if kept else ''}"}]
    if next_token:
        link.append({"relation": "next", "url": f"{base_url}{path}?{urlencode({**kept, '_page': next_token})}"})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": link}
    if total is not None:
        bundle["total"] = total
    bundle["entry"] = [
        {"fullUrl": f"{base_url}/fhir/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
        for r in resources
    ] + [
        {"fullUrl": f"{base_url}/fhir/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "include"}}
        for r in included
    ]
    return bundle


def history_bundle(*, base_url: str, path: str, versions: Sequence[dict[str, Any]], next_token: str | None,
                   total: int | None) -> dict[str, Any]:
    """A history ``Bundle`` (newest first); entries carry the version's request/response."""
    link = [{"relation": "self", "url": f"{base_url}{path}"}]
    if next_token:
        link.append({"relation": "next", "url": f"{base_url}{path}?{urlencode({'_page': next_token})}"})
    entries = []
    for resource in versions:
        version = resource["meta"]["versionId"]
        url = f"{resource['resourceType']}/{resource['id']}"
        entries.append(
            {
                "fullUrl": f"{base_url}/fhir/{url}",
                "resource": resource,
                "request": {"method": "POST" if version == "1" else "PUT", "url": url if version != "1"
                            else resource["resourceType"]},
                "response": {"status": "201" if version == "1" else "200", "etag": f'W/"{version}"',
                             "lastModified": resource["meta"]["lastUpdated"]},
            }
        )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "link": link, "entry": entries}
    if total is not None:
        bundle["total"] = total
    return bundle


def validate(resource_type: str, data: dict[str, Any]) -> Any:
    """Validate ``data`` as an R4B ``resource_type``; 400 naming the element on failure.

    The model is imported on first use: a function that only reads never pays for the FHIR
    model classes at cold start.
    """
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    model = get_fhir_model_class(resource_type)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.get("loc", ())
                        if p != "__root__").lstrip(".")
        location = f"{resource_type}.{where}" if where else resource_type
        raise Invalid(f"{location}: {first.get('msg', 'invalid')}", expression=location) from exc
