"""``Patient/$everything``: the patient's whole record as one FHIR searchset ``Bundle``.

The NOM-024 export and the answer to an ARCO access request. The Bundle holds the Patient (first
entry of the first page) and the current version of every resource of its compartment in every
domain, read from each domain's table through the shared :class:`~expediente.clinical.ClinicalRepository`
(architecture decision 2: a function may read another domain's table) and shown as that domain's
own reads show it (notes: narrative only for the roles that read it; imaging: the instances).
The signatures (``Provenance``) of the notes and prescriptions on a page, and the formulary
``Medication`` items its prescriptions and dispensations name, follow as ``search.mode = include``.

Order: Patient, then Encounter, Condition, Composition, Observation, DiagnosticReport, ImagingStudy,
ServiceRequest, AllergyIntolerance, MedicationRequest, MedicationDispense, DetectedIssue, Communication;
each type newest first. A page holds at most ``_count`` matches; the ``next`` link carries an opaque
token (the type reached and that type's own index continuation token, bound to this patient and
these parameters). Each type is one bounded ``Query`` on its patient index partition: never a Scan.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from expediente import records
from expediente.clinical import ClinicalRepository
from expediente.context import RequestContext
from expediente.errors import Invalid
from expediente.fhir import query_fingerprint
from expediente.permissions import Interaction, allowed, reads_narrative
from expediente.store import Stored

SUPPORTED = frozenset({"_since", "_type", "_count", "_page"})


@dataclass(frozen=True)
class Source:
    """A compartment resource type, the table holding it, and whether only some roles receive it.

    ``restricted`` types are clinical workflow artefacts (prescription alerts, critical-result
    messages) rather than the patient's record: they are exported only to roles the permission
    table lets search them.
    """

    resource_type: str
    table: str  # the Settings attribute naming the table
    restricted: bool = False


SOURCES: tuple[Source, ...] = (
    Source("Encounter", "table_notes"),
    Source("Condition", "table_notes"),
    Source("Composition", "table_notes"),
    Source("Observation", "table_results"),
    Source("DiagnosticReport", "table_results"),
    Source("ImagingStudy", "table_results"),
    Source("ServiceRequest", "table_orders"),
    Source("AllergyIntolerance", "table_prescriptions"),
    Source("MedicationRequest", "table_prescriptions"),
    Source("MedicationDispense", "table_prescriptions"),
    Source("DetectedIssue", "table_prescriptions", restricted=True),
    Source("Communication", "table_results", restricted=True),
)
INCLUDED = ("Provenance", "Medication")
EXPORTABLE = frozenset({"Patient", *(s.resource_type for s in SOURCES), *INCLUDED})
_PROVENANCE_TABLES = ("table_notes", "table_prescriptions")  # tables where signatures live


@dataclass
class Export:
    """One page of the export: matches (the patient and their resources), includes, the next token."""

    matches: list[dict[str, Any]] = field(default_factory=list)
    included: list[dict[str, Any]] = field(default_factory=list)
    next_token: str | None = None

    @property
    def count(self) -> int:
        return len(self.matches) + len(self.included)


@dataclass(frozen=True)
class Query:
    types: frozenset[str]
    since: datetime | None


def _repository(table_attr: str) -> ClinicalRepository:
    """The owning domain's own repository (so its key layout stays its own)."""
    from importlib import import_module

    domain = {"table_notes": "notes", "table_results": "results", "table_orders": "orders",
              "table_prescriptions": "prescriptions"}[table_attr]
    repository: ClinicalRepository = import_module(f"functions.{domain}.repository").repository()
    return repository


def parse(params: Mapping[str, str]) -> Query:
    """``_type`` and ``_since`` (``_count`` and ``_page`` are read by the caller); 400 for anything else."""
    unknown = sorted(set(params) - SUPPORTED)
    if unknown:
        raise Invalid(f"Unsupported Patient/$everything parameter(s): {', '.join(unknown)} "
                      f"(supported: {', '.join(sorted(SUPPORTED))})", expression=unknown[0])
    types = frozenset(EXPORTABLE)
    if params.get("_type") is not None:
        types = frozenset(t.strip() for t in params["_type"].split(",") if t.strip())
        unknown_types = sorted(types - EXPORTABLE)
        if not types or unknown_types:
            raise Invalid(f"_type must list resource types of the patient compartment: "
                          f"{', '.join(sorted(EXPORTABLE))}", expression="_type")
    since = None
    if params.get("_since"):
        since = _instant(params["_since"])
    return Query(types, since)


def _instant(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Invalid(f"_since {value!r} must be an instant such as 2026-01-31T00:00:00Z",
                      expression="_since") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _updated_since(resource: Mapping[str, Any], since: datetime | None) -> bool:
    if since is None:
        return True
    updated = str((resource.get("meta") or {}).get("lastUpdated") or "")
    return bool(updated) and datetime.fromisoformat(updated.replace("Z", "+00:00")) >= since


def _encode(position: int, inner: str | None, fingerprint: str) -> str:
    payload = json.dumps({"s": position, "p": inner, "f": fingerprint}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _decode(token: str, fingerprint: str) -> tuple[int, str | None]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position, inner = int(data["s"]), data["p"]
        ok = data["f"] == fingerprint and 0 <= position < len(SOURCES) and (inner is None or isinstance(inner, str))
    except (ValueError, KeyError, TypeError, binascii.Error):
        ok = False
    if not ok:
        raise Invalid("_page is not a continuation token of this Patient/$everything", expression="_page")
    return position, inner


def _present(ctx: RequestContext, stored: Stored) -> dict[str, Any]:
    """A resource as its own domain's read shows it to this caller."""
    kind = stored.resource.get("resourceType")
    if kind == "Composition":
        from functions.notes import compositions

        return compositions.present(stored, ctx.roles, narrative=reads_narrative(ctx.roles))
    if kind == "ImagingStudy":
        from functions.results import imaging

        return imaging.present(ctx, stored)
    return stored.resource


def _sources(ctx: RequestContext, q: Query) -> list[bool]:
    """For each source, whether this export reads it."""
    return [s.resource_type in q.types and (not s.restricted or allowed(ctx.roles, s.resource_type,
                                                                          Interaction.SEARCH))
            for s in SOURCES]


def collect(ctx: RequestContext, patient: Stored, params: Mapping[str, str], *, limit: int,
            medications: Callable[[RequestContext, list[str]], list[dict[str, Any]]] | None = None,
            present: bool = True) -> Export:
    """One page of the export of ``patient`` (already read and authorized for ``ctx``).

    ``present=False`` returns the stored resources as they are (for :func:`last_act`).

    Raises 400 for an unsupported parameter, an unknown ``_type`` or a ``_page`` token of
    another export.
    """
    q = parse(params)
    patient_id = str(patient.resource["id"])
    fingerprint = f"{patient_id}:{query_fingerprint(params)}"
    inner_fingerprint = f"$everything:{patient_id}"
    wanted = _sources(ctx, q)
    out = Export()
    position, inner = (_decode(params["_page"], fingerprint) if params.get("_page") else (0, None))
    if not params.get("_page") and "Patient" in q.types:
        out.matches.append(patient.resource)
    found: list[Stored] = []
    while position < len(SOURCES) and len(out.matches) < limit:
        source = SOURCES[position]
        if not wanted[position]:
            position, inner = position + 1, None
            continue
        stored, page = _repository(source.table).search(
            ctx, source.resource_type, "patient", patient_id, limit=limit - len(out.matches), token=inner,
            fingerprint=inner_fingerprint)
        kept = [s for s in stored if _updated_since(s.resource, q.since)]
        found += kept
        out.matches += [_present(ctx, s) if present else s.resource for s in kept]
        if page.next_token:
            inner = page.next_token
        else:
            position, inner = position + 1, None
    while position < len(SOURCES) and not wanted[position]:
        position, inner = position + 1, None
    if position < len(SOURCES):
        out.next_token = _encode(position, inner, fingerprint)
    out.included = _includes(ctx, found, q, medications)
    return out


def _includes(ctx: RequestContext, found: list[Stored], q: Query,
              medications: Callable[[RequestContext, list[str]], list[dict[str, Any]]] | None) -> list[dict[str, Any]]:
    """The signatures of the page's notes and prescriptions, and the Medication items they name."""
    included: list[dict[str, Any]] = []
    if "Provenance" in q.types:
        for table_attr, kind in (("table_notes", "Composition"), ("table_prescriptions", "MedicationRequest")):
            ids = [str(s.attrs["provenance"]) for s in found
                   if s.resource.get("resourceType") == kind and s.attrs.get("provenance")]
            if ids:
                included += [s.resource for s in _repository(table_attr).get_many(ctx, "Provenance", ids)
                             if _updated_since(s.resource, q.since)]
    if "Medication" in q.types and medications is not None:
        ids = [ref.id for s in found
               if s.resource.get("resourceType") in ("MedicationRequest", "MedicationDispense")
               and (ref := _medication_ref(s.resource)) is not None]
        if ids:
            included += medications(ctx, list(dict.fromkeys(ids)))
    return included


def _medication_ref(resource: Mapping[str, Any]) -> records.Ref | None:
    reference = (resource.get("medicationReference") or {}).get("reference")
    try:
        return records.parse(reference, where="medicationReference", types=("Medication",))
    except Invalid:
        return None


def formulary_items(ctx: RequestContext, ids: list[str]) -> list[dict[str, Any]]:
    """The tenant's formulary items (catalogue or local, hidden ones too) as FHIR ``Medication``."""
    from functions.prescriptions import formulary as catalogue
    from functions.prescriptions.repository import formulary

    view = formulary(ctx)
    items = [item for i in ids if (item := view.get(i, include_hidden=True)) is not None]
    return [catalogue.to_fhir(item, hidden=item.id in view.hidden) for item in items]


def last_act(ctx: RequestContext, patient: Stored) -> str:
    """The instant of the last act on the patient's record: the latest ``meta.lastUpdated`` of the Patient
    and of every resource of its compartment (NOM-004 5.4 counts the retention period from it)."""
    latest = str(patient.resource["meta"]["lastUpdated"])
    params: dict[str, str] = {}
    while True:
        page = collect(ctx, patient, params, limit=100, present=False)
        for resource in page.matches:
            updated = str((resource.get("meta") or {}).get("lastUpdated") or "")
            latest = max(latest, updated)  # FHIR instants in UTC with milliseconds sort as text
        if page.next_token is None:
            return latest
        params = {"_page": page.next_token}
