"""Where each resource type is stored, and references between resources checked in the tenant.

Architecture decision 2: each resource type is owned (written) by one domain function; another
function may *read* it when it must check a reference. This module knows which table holds
which type, so a note can check that its diagnoses, vital signs and patient exist in the same
tenant, and a signature can pin and re-read the exact versions it covered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from expediente import arco, tenants
from expediente.context import TenantId, valid_resource_id
from expediente.errors import Invalid, Unprocessable
from expediente.settings import settings
from expediente.store import Stored, VersionedStore, get_item

# resource type -> the Settings attribute naming its table
_OWNERS: dict[str, str] = {
    "Patient": "table_patients",
    "Encounter": "table_notes",
    "Composition": "table_notes",
    "Condition": "table_notes",
    "Provenance": "table_notes",
    "Observation": "table_results",
    "DiagnosticReport": "table_results",
    "Communication": "table_results",
    "ImagingStudy": "table_results",
    "ServiceRequest": "table_orders",
    "MedicationRequest": "table_prescriptions",
    "AllergyIntolerance": "table_prescriptions",
    "MedicationDispense": "table_prescriptions",
    "DetectedIssue": "table_prescriptions",
    "Practitioner": "table_admin",
    "Organization": "table_admin",
}
# Types whose owning domain a deployment may not hold yet: a reference to them is checked only where it does.
PENDING_TYPES = frozenset({"MedicationRequest"})

_REFERENCE = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(/_history/(?P<version>\d{1,9}))?$")


@dataclass(frozen=True)
class Ref:
    """A parsed literal reference ``Type/id`` or ``Type/id/_history/n``."""

    resource_type: str
    id: str
    version: int | None = None

    def __str__(self) -> str:
        base = f"{self.resource_type}/{self.id}"
        return base if self.version is None else f"{base}/_history/{self.version}"

    @property
    def unversioned(self) -> str:
        return f"{self.resource_type}/{self.id}"


def parse(value: object, *, where: str, types: frozenset[str] | set[str] | tuple[str, ...]) -> Ref:
    """A relative literal reference to one of ``types``; 400 naming ``where`` otherwise."""
    match = _REFERENCE.match(value) if isinstance(value, str) else None
    if match is None:
        raise Invalid(f"{where} must be a relative reference such as {sorted(types)[0]}/<id>", expression=where)
    ref = Ref(match["type"], match["id"], int(match["version"]) if match["version"] else None)
    if ref.resource_type not in types:
        raise Invalid(f"{where} must reference one of {', '.join(sorted(types))}, not {ref.resource_type}",
                      expression=where)
    return ref


def stored_here(resource_type: str) -> bool:
    """Whether this deployment holds ``resource_type`` (and this function was given its table)."""
    attribute = _OWNERS.get(resource_type)
    return attribute is not None and bool(getattr(settings(), attribute))


@cache
def store(resource_type: str) -> VersionedStore:
    """The versioned store of ``resource_type``, read through the tenant's envelope."""
    attribute = _OWNERS.get(resource_type)
    table = getattr(settings(), attribute) if attribute else ""
    if not table:
        raise Unprocessable(f"{resource_type} references cannot be checked: this deployment does not hold "
                            f"{resource_type} resources yet")
    return VersionedStore(table=table, resource_type=resource_type, envelope=tenants.envelope())


def load(tenant: TenantId, ref: Ref) -> Stored | None:
    """The referenced version (or the current one when the reference has no version), or None."""
    if ref.resource_type in PENDING_TYPES and not stored_here(ref.resource_type):
        raise Unprocessable(f"{ref.resource_type} references cannot be checked: this deployment does not hold "
                            f"{ref.resource_type} resources yet", expression=str(ref))
    target = store(ref.resource_type)
    if ref.version is None:
        stored = target.get(tenant, ref.id)
        if stored is not None and ref.resource_type == "Patient":
            # ARCO cancellation: resolving a blocked patient refuses the write (or read) being prepared.
            arco.check_open(stored)
        return stored
    return target.get_version(tenant, ref.id, ref.version)


def find(tenant: TenantId, resource_type: str, resource_id: str) -> dict[str, Any] | None:
    """The current ``resource_type/resource_id`` of the tenant, or None (also for an id that cannot exist)."""
    if not valid_resource_id(resource_id):
        return None
    stored = load(tenant, Ref(resource_type, resource_id))
    return None if stored is None else stored.resource


def load_many(tenant: TenantId, refs: list[Ref]) -> dict[str, Stored]:
    """Several references at once, keyed by ``str(ref)``; missing ones are absent.

    Current versions come from one ``BatchGetItem`` across the owning tables (consistent reads);
    versioned references are read one by one.
    """
    from expediente import aws
    from expediente.store import batch_get

    found: dict[str, Stored] = {}
    wanted: dict[tuple[str, str], Ref] = {}
    for ref in refs:
        if ref.resource_type in PENDING_TYPES and not stored_here(ref.resource_type):
            load(tenant, ref)  # raises the explanation
        if ref.version is not None:
            stored = load(tenant, ref)
            if stored is not None:
                found[str(ref)] = stored
        else:
            wanted[(ref.resource_type, ref.id)] = ref
    request: dict[str, Any] = {}
    for resource_type, resource_id in wanted:
        target = store(resource_type)
        table = request.setdefault(target.table, {"Keys": [], "ConsistentRead": True})
        table["Keys"].append(target.current_key(tenant, resource_id))
    while request:
        response = batch_get(request)
        for items in response.get("Responses", {}).values():
            for raw in items:
                item = aws.from_item(raw)
                _, resource_type, resource_id = str(item["pk"]).rsplit("#", 2)
                ref = wanted[(resource_type, resource_id)]
                found[str(ref)] = store(resource_type).decode(tenant, resource_id, item)
                if resource_type == "Patient":
                    arco.check_open(found[str(ref)])  # ARCO cancellation, as in load()
        request = response.get("UnprocessedKeys") or {}
    return found


def unique_key(tenant: str, resource_type: str, value: str) -> dict[str, str]:
    """The admin table's uniqueness guard of a Practitioner cédula or a clinic's CLUES (holds ``rid``)."""
    return {"pk": f"{tenant}#{resource_type}#UNIQUE#{value}", "sk": "GUARD"}


def find_unique(tenant: TenantId, resource_type: str, value: str) -> str | None:
    """The id of the tenant's Organization with this CLUES (or Practitioner with this cédula), or None."""
    item = get_item(settings().table_admin, unique_key(tenant, resource_type, value))
    return None if item is None else str(item["rid"])


def subject_of(resource: dict[str, object]) -> str | None:
    """The patient id a clinical resource belongs to (``subject`` or ``patient``), or None."""
    for element in ("subject", "patient"):
        value = resource.get(element)
        if isinstance(value, dict):
            reference = value.get("reference")
            if isinstance(reference, str) and reference.startswith("Patient/"):
                return reference.split("/")[1]
    return None
