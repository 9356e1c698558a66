"""The only code that talks to DynamoDB for results.

Items in the ``results`` table (layout hidden from callers; see :mod:`expediente.clinical`):
- versioned ``Observation`` (``<tenant>#Observation#<id>`` / ``CURRENT`` and ``V#n``), bodies
  encrypted with the tenant's envelope; notes read the same items through
  :func:`expediente.records.load` to check the Observations a note references;
- versioned ``DiagnosticReport`` and ``Communication`` (critical-result alerts), same layout;
- ``ImagingStudy`` and its instances, written by the DICOM ingest (layout in :mod:`expediente.imaging`);
- search index items per facet (``<tenant>#<Type>#IX#<facet>#<value>`` / ``<instant>#<id>``):
  a patient's, an encounter's or an order's results, one test of one patient over time
  (``patient-code``), a clinic's alerts and the open ones, newest first;
- one marker per code a patient has results of (``<tenant>#Observation#CODES#<patient>`` /
  ``<category>#<code>``), so ``$lastn`` knows which trends to read without walking the history.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from expediente import aws
from expediente.clinical import ClinicalRepository
from expediente.context import TenantId
from expediente.settings import settings
from expediente.store import query

TYPES = ("Observation", "DiagnosticReport", "Communication", "ImagingStudy")


def _codes_partition(tenant: TenantId, patient_id: str) -> str:
    return f"{tenant}#Observation#CODES#{patient_id}"


def code_marker(table: str, tenant: TenantId, patient_id: str, category: str, code: str) -> dict[str, Any]:
    """A transaction element noting that the patient has results of ``code`` (for ``$lastn``)."""
    return {"Put": {"TableName": table, "Item": aws.to_item(
        {"pk": _codes_partition(tenant, patient_id), "sk": f"{category}#{code}", "category": category,
         "code": code})}}


def patient_codes(tenant: TenantId, patient_id: str, *, category: str | None = None) -> list[str]:
    """The codes of the patient's results (of one category), from the markers; one Query per page."""
    values: dict[str, Any] = {":pk": _codes_partition(tenant, patient_id)}
    condition = "pk = :pk"
    if category:
        condition += " AND begins_with(sk, :category)"
        values[":category"] = f"{category}#"
    codes: list[str] = []
    start: dict[str, Any] | None = None
    while True:
        args: dict[str, Any] = {"TableName": settings().table_results, "KeyConditionExpression": condition,
                                "ExpressionAttributeValues": aws.to_item(values)}
        if start:
            args["ExclusiveStartKey"] = start
        response = query(**args)
        codes += [str(aws.from_item(item)["code"]) for item in response.get("Items", [])]
        start = response.get("LastEvaluatedKey")
        if not start:
            return codes


@cache
def repository() -> ClinicalRepository:
    return ClinicalRepository(table=settings().table_results, types=TYPES)
