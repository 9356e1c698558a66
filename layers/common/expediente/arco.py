"""ARCO cancellation: a blocked record is kept but out of clinical use (docs/decisions/0024-patient-access-and-arco.md).

When a patient asks to cancel their data (LFPDPPP ARCO rights), NOM-004-SSA3 5.4 still requires the
clinic to keep the record for at least five years after the last act, and 5.11 forbids erasures. So
the record is *blocked*, never deleted: the patients function writes a new Patient version
(``active=false``, a ``meta.tag`` and the request in an extension) whose ``CURRENT`` item carries
:data:`BLOCK_ATTR` (the date the retention period ends). From then on:

* every new clinical write for the patient answers 403 ``suppressed`` (:class:`RecordBlocked`):
  creates are refused where each domain resolves its patient reference (:mod:`expediente.records`),
  updates and operations where they read the resource they change (:mod:`expediente.clinical`);
* clinical roles' reads answer the same 403, and their searches leave the patient's resources out;
* the roles in :data:`EXEMPT_ROLES` still see it: ``admin`` (the legal copy through
  ``Patient/$everything``), ``auditor`` (the audit trail) and the patient (their access right).

Nothing unblocks a record: when retention ends it waits for anonymization (a future job), never deletion.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Final

from expediente import aws
from expediente.context import RequestContext, TenantId
from expediente.errors import Forbidden
from expediente.permissions import Role
from expediente.settings import settings
from expediente.store import CURRENT, Stored, batch_get, partition

RETENTION_YEARS: Final = 5  # NOM-004-SSA3 5.4: at least five years from the last act
BLOCK_ATTR: Final = "arco_blocked_until"  # on the Patient's CURRENT item: ISO date the retention period ends
BLOCK_EXTENSION: Final = "urn:expediente:fhir:StructureDefinition:arco-cancellation"
BLOCK_TAG: Final = "arco-blocked"
EXEMPT_ROLES: Final = frozenset({Role.ADMIN, Role.AUDITOR, Role.PATIENT})


class RecordBlocked(Forbidden):
    """403 ``suppressed``: the patient's record is blocked by an ARCO cancellation request.

    The block is a privacy rule, not a fault in the request: FHIR's ``suppressed`` issue type says
    the information is withheld by policy. Nothing the caller changes makes the request succeed.
    """

    code = "suppressed"

    def __init__(self, patient_id: str, until: str):
        super().__init__(f"Patient/{patient_id}: record blocked by an ARCO cancellation request; it is kept "
                         f"(NOM-004-SSA3 5.4) until {until} but is out of clinical use")


def blocked_until(stored: Stored) -> str | None:
    """The date the retention of a blocked Patient ends, or None when the record is in use."""
    value = stored.attrs.get(BLOCK_ATTR)
    return str(value) if value else None


def check_open(stored: Stored) -> None:
    """Raise :class:`RecordBlocked` when ``stored`` (a current Patient) is blocked, for any caller."""
    until = blocked_until(stored)
    if until:
        raise RecordBlocked(str(stored.resource["id"]), until)


def applies_to(ctx: RequestContext) -> bool:
    """Whether the block hides records from this caller's reads: any role outside :data:`EXEMPT_ROLES`.

    A service context (no role: a schedule or queue consumer finishing work already started) is
    not refused on reads; its writes are refused where the patient reference is resolved.
    """
    return bool(ctx.roles - EXEMPT_ROLES)


def blocked_patients(tenant: TenantId, patient_ids: Iterable[str]) -> dict[str, str]:
    """Of ``patient_ids``, those whose record is blocked, with the date retention ends.

    One ``BatchGetItem`` on the patients table per 100 ids, projecting the block attribute only
    (no body is read or decrypted).
    """
    ids = sorted({p for p in patient_ids if p})
    table = settings().table_patients
    found: dict[str, str] = {}
    for start in range(0, len(ids), 100):
        keys = [aws.to_item({"pk": partition(tenant, "Patient", pid), "sk": CURRENT}) for pid in ids[start:start + 100]]
        request: dict[str, object] = {table: {"Keys": keys, "ProjectionExpression": f"pk, {BLOCK_ATTR}",
                                              "ConsistentRead": True}}
        while request:
            response = batch_get(request)
            for raw in response.get("Responses", {}).get(table, []):
                item = aws.from_item(raw)
                if item.get(BLOCK_ATTR):
                    found[str(item["pk"]).rsplit("#", 1)[1]] = str(item[BLOCK_ATTR])
            request = response.get("UnprocessedKeys") or {}
    return found


def owner(stored: Stored) -> str | None:
    """The patient a clinical resource belongs to (``subject``/``patient``, or the ``patient`` attribute)."""
    for element in ("subject", "patient"):
        value = stored.resource.get(element)
        if isinstance(value, dict):
            reference = value.get("reference")
            if isinstance(reference, str) and reference.startswith("Patient/"):
                return reference.split("/")[1]
    attr = stored.attrs.get("patient")
    return str(attr) if attr else None


def refuse_blocked(ctx: RequestContext, stored: Stored) -> None:
    """Raise :class:`RecordBlocked` when ``stored`` belongs to a blocked patient and the block applies to ``ctx``."""
    patient = owner(stored)
    if patient and applies_to(ctx):
        until = blocked_patients(ctx.tenant, [patient]).get(patient)
        if until:
            raise RecordBlocked(patient, until)


def without_blocked(ctx: RequestContext, found: Sequence[Stored]) -> list[Stored]:
    """``found`` without the resources of blocked patients, when the block applies to ``ctx``."""
    if not found or not applies_to(ctx):
        return list(found)
    blocked = blocked_patients(ctx.tenant, [p for s in found if (p := owner(s))])
    return [s for s in found if owner(s) not in blocked] if blocked else list(found)


def retention_end(last_act: date) -> date:
    """The first day the retention period no longer covers: ``last_act`` plus :data:`RETENTION_YEARS` years."""
    try:
        return last_act.replace(year=last_act.year + RETENTION_YEARS)
    except ValueError:  # 29 February → 28 February
        return last_act.replace(year=last_act.year + RETENTION_YEARS, day=28)
