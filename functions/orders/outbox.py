"""The HL7 v2 outbox: each laboratory order (and its cancellation) as an ORM^O01 for the lab's interface engine.

The message is written to the documents bucket, under ``<tenant>/hl7/outbox/<CLUES>/<date>/<control id>.hl7``
(KMS-encrypted by the bucket's key), and announced by an ``OrderMessageQueued`` event carrying the
bucket, key and control id, never the content. A new order's message is written before the order
is committed (see :func:`functions.orders.logic.create`), so every committed order has its
message; a message whose order then failed to commit is never announced, and engines read the
messages announced to them. PID-3 carries our record id with assigning authority ``EXPEDIENTE``
(what ORU^R01 results must send back) and the CURP; ORC-2/OBR-2 the placer number.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from expediente import aws, icd10, records
from expediente import hl7v2 as codec
from expediente.context import RequestContext
from expediente.identifiers import CURP_SYSTEM, FATHERS_FAMILY, MOTHERS_FAMILY
from expediente.settings import settings

from . import logic

RECEIVING_APPLICATION = "LIS"  # the laboratory information system; the engine routes by CLUES


@dataclass(frozen=True)
class Queued:
    bucket: str
    key: str
    control_id: str
    message_type: str = "ORM^O01"
    version_id: str | None = None


def _ext(items: list[dict[str, Any]] | None, url: str) -> dict[str, Any]:
    return next((e for e in items or [] if e.get("url") == url), {})


def _patient(resource: dict[str, Any]) -> codec.OutboundPatient:
    name = (resource.get("name") or [{}])[0]
    family_ext = (name.get("_family") or {}).get("extension")
    first = _ext(family_ext, FATHERS_FAMILY).get("valueString") or name.get("family", "")
    second = _ext(family_ext, MOTHERS_FAMILY).get("valueString")
    curp = next((i["value"] for i in resource.get("identifier") or [] if i.get("system") == CURP_SYSTEM), None)
    return codec.OutboundPatient(record_number=resource["id"], record_authority=codec.RECORD_AUTHORITY,
                                 first_surname=first, second_surname=second, given=" ".join(name.get("given") or []),
                                 birth_date=date.fromisoformat(resource["birthDate"]),
                                 sex=resource.get("gender", "unknown"), curp=curp)


def message(ctx: RequestContext, order: dict[str, Any], *, control: str = "NW", control_id: str,
            now: datetime) -> str:
    """The ORM^O01 of a laboratory order (``CA`` to cancel it)."""
    patient = records.find(ctx.tenant, "Patient", records.subject_of(order) or "")
    if patient is None:
        raise ValueError("the order's patient is not readable")  # the order was just checked against it
    requester = str(order["requester"]["reference"]).split("/")[1]
    practitioner = records.find(ctx.tenant, "Practitioner", requester) or {}
    doctor = (practitioner.get("name") or [{}])[0]
    encounter_id = str(order["encounter"]["reference"]).split("/")[1]
    encounter = records.find(ctx.tenant, "Encounter", encounter_id) or {}
    code = order["code"]["coding"][0]
    reasons = tuple((str(c["code"]), str(c.get("display", "")))
                    for concept in order.get("reasonCode") or [] for c in concept.get("coding") or []
                    if c.get("system") == icd10.SYSTEM)
    clues = logic.clinic_of(order)
    return codec.orm_o01(
        header=codec.OutboundHeader(clues=clues, receiving_application=RECEIVING_APPLICATION,
                                    receiving_facility=clues),
        patient=_patient(patient),
        order=codec.OutboundOrder(
            placer_number=str(order["identifier"][0]["value"]), service_code=str(code["code"]),
            service_text=str(code.get("display", "")), requested_at=datetime.fromisoformat(
                order["authoredOn"].replace("Z", "+00:00")),
            provider_id=requester, provider_family=str(doctor.get("family", "")),
            provider_given=" ".join(doctor.get("given") or []), facility_name=clues, control=control,
            priority=order.get("priority", "routine"), reasons=reasons,
            encounter_class=(encounter.get("class") or {}).get("code"), encounter_id=encounter_id),
        now=now, control_id=control_id)


def queue(ctx: RequestContext, order: dict[str, Any], *, control: str = "NW") -> Queued:
    """Write the order's message to the outbox; returns where (raises botocore errors when S3 refuses)."""
    now = datetime.now(UTC)
    control_id = f"ORM{now:%Y%m%d}{uuid.uuid4().hex[:9].upper()}"
    text = message(ctx, order, control=control, control_id=control_id, now=now)
    clues = logic.clinic_of(order) or "sin-clues"
    key = f"{ctx.tenant}/hl7/outbox/{clues}/{now:%Y/%m/%d}/{control_id}.hl7"
    bucket = settings().bucket_documents
    put = aws.client("s3").put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"),
                                      ContentType="x-application/hl7-v2+er7",
                                      Metadata={"order-id": order["id"], "control-id": control_id,
                                                "order-control": control})
    return Queued(bucket, key, control_id, version_id=put.get("VersionId"))


def withdraw(message: Queued) -> None:
    """Erase the message of an order that was not committed: its exact version, so the laboratory never
    sees it and no copy of the patient's data stays behind a delete marker. It is not a clinical record
    (the order does not exist); the orders function may erase only these versions, under its tenant's
    ``hl7/outbox/`` prefix (``infra.tenancy``). Best effort: if S3 refuses, the message stays, never
    announced, and is logged by key (tenant, clinic, control id: no patient data)."""
    from botocore.exceptions import BotoCoreError, ClientError

    args = {"Bucket": message.bucket, "Key": message.key}
    if message.version_id:
        args["VersionId"] = message.version_id
    try:
        aws.client("s3").delete_object(**args)
    except (BotoCoreError, ClientError) as exc:
        from expediente.api import logger

        logger.warning("outbox message of an uncommitted order not withdrawn",
                       extra={"key": message.key, "error": aws.error_code(exc) or type(exc).__name__})
