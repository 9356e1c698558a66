"""Where ingested DICOM lives: the imaging items of the ``results`` table and the archive keys.

Written only by ``functions/dicom_ingest`` (architecture decision 2: dicom_ingest writes
ImagingStudy); read by ``functions/results`` (FHIR ImagingStudy and DICOMweb) and by the ingest
itself. Callers never build these keys.

Items in the ``results`` table (decision 0018):
- the versioned ``ImagingStudy`` (``<tenant>#ImagingStudy#<StudyInstanceUID>``), holding the study
  and its series with their instance counts; its ``CURRENT`` item also carries ``dicom``, the
  study-level DICOM attributes (patient, accession, dates) as encrypted DICOM JSON;
- one item per instance (``<tenant>#ImagingStudy#<study>#I`` / ``<series>#<sop>``) holding what
  QIDO-RS and WADO-RS answer: the UIDs, numbers, transfer syntax, the archive key, the ImagingStudy
  version that added it (``added_in``, so a vread shows the instances of that version) and the
  header as encrypted DICOM JSON;
- one guard per SOP Instance UID (``<tenant>#SOP#<uid>`` / ``GUARD``) naming its study and series,
  written with the instance: an instance is stored once, whoever delivers it again;
- quarantine records (``<tenant>#DicomQuarantine`` / ``<id>``), newest id last.

The archive bucket holds each instance at ``<tenant>/<study>/<series>/<sop>.dcm``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from expediente import aws, tenants
from expediente.context import TenantId
from expediente.settings import settings
from expediente.store import get_item, partition, query

STUDY = "ImagingStudy"
QUARANTINE = "DicomQuarantine"
DICOM_UID_SYSTEM = "urn:dicom:uid"
DCM = "http://dicom.nema.org/resources/ontology/DCM"


def archive_key(tenant: TenantId, study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The instance's key in the imaging archive bucket."""
    return f"{tenant}/{study_uid}/{series_uid}/{sop_uid}.dcm"


def instances_partition(tenant: TenantId, study_uid: str) -> str:
    return f"{partition(tenant, STUDY, study_uid)}#I"


def instance_sk(series_uid: str, sop_uid: str) -> str:
    return f"{series_uid}#{sop_uid}"


def sop_guard_key(tenant: TenantId, sop_uid: str) -> dict[str, str]:
    return {"pk": f"{tenant}#SOP#{sop_uid}", "sk": "GUARD"}


def quarantine_partition(tenant: str) -> str:
    return f"{tenant}#{QUARANTINE}"


def encrypt_dicom(tenant: TenantId, value: dict[str, Any], aad: str) -> str:
    """DICOM JSON carries the patient's name and identifiers: encrypted like resource bodies."""
    return tenants.envelope().encrypt(tenant, json.dumps(value, separators=(",", ":")).encode(), aad)


def decrypt_dicom(tenant: TenantId, token: str, aad: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(tenants.envelope().decrypt(tenant, token, aad))
    return value


def study_aad(study_uid: str) -> str:
    return f"{STUDY}/{study_uid}/dicom"


def instance_aad(study_uid: str, sop_uid: str) -> str:
    return f"{STUDY}/{study_uid}/{sop_uid}/dicom"


@dataclass(frozen=True)
class InstanceRecord:
    """One stored instance, as QIDO-RS and WADO-RS need it."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    instance_number: int | None
    number_of_frames: int
    transfer_syntax_uid: str
    size: int
    archive_key: str
    added_in: int
    ingested_at: str
    # The header (no pixel data) as DICOM JSON (PS3.18 F.2); binary values over 1 KiB are left out
    # as ``{"vr": ..., "BulkDataURI": ""}``, the URI filled in by whoever serves it.
    metadata: dict[str, Any]
    # The archive object's S3 version: what WADO-RS serves is exactly what was indexed.
    archive_version: str | None = None

    def item(self, tenant: TenantId) -> dict[str, Any]:
        """The DynamoDB item (plain values) of this instance."""
        return {
            "pk": instances_partition(tenant, self.study_uid), "sk": instance_sk(self.series_uid, self.sop_uid),
            "study": self.study_uid, "series": self.series_uid, "sop": self.sop_uid, "sop_class": self.sop_class_uid,
            "number": self.instance_number if self.instance_number is not None else -1,
            "frames": self.number_of_frames, "transfer_syntax": self.transfer_syntax_uid, "size": self.size,
            "archive_key": self.archive_key, "added_in": self.added_in, "ingested_at": self.ingested_at,
            "dicom": encrypt_dicom(tenant, self.metadata, instance_aad(self.study_uid, self.sop_uid)),
            **({"archive_version": self.archive_version} if self.archive_version else {}),
        }

    @classmethod
    def from_item(cls, tenant: TenantId, item: dict[str, Any]) -> InstanceRecord:
        number = int(item["number"])
        return cls(
            study_uid=str(item["study"]), series_uid=str(item["series"]), sop_uid=str(item["sop"]),
            sop_class_uid=str(item["sop_class"]), instance_number=None if number < 0 else number,
            number_of_frames=int(item["frames"]), transfer_syntax_uid=str(item["transfer_syntax"]),
            size=int(item["size"]), archive_key=str(item["archive_key"]), added_in=int(item["added_in"]),
            ingested_at=str(item["ingested_at"]),
            metadata=decrypt_dicom(tenant, str(item["dicom"]), instance_aad(str(item["study"]), str(item["sop"]))),
            archive_version=str(item["archive_version"]) if item.get("archive_version") else None,
        )


def instances(tenant: TenantId, study_uid: str, *, series_uid: str | None = None, sop_uid: str | None = None,
              up_to_version: int | None = None) -> list[InstanceRecord]:
    """The stored instances of a study (of one series, or one instance), ordered by series then number.

    ``up_to_version`` keeps those added by that ImagingStudy version or before (a vread).
    """
    return sorted(_instances(tenant, study_uid, series_uid=series_uid, sop_uid=sop_uid,
                             up_to_version=up_to_version),
                  key=lambda i: (i.series_uid, i.instance_number if i.instance_number is not None else 1 << 30,
                                 i.sop_uid))


def _instances(tenant: TenantId, study_uid: str, *, series_uid: str | None, sop_uid: str | None,
               up_to_version: int | None) -> Iterator[InstanceRecord]:
    table = settings().table_results
    if series_uid and sop_uid:
        item = get_item(table, {"pk": instances_partition(tenant, study_uid), "sk": instance_sk(series_uid, sop_uid)})
        if item is not None and (up_to_version is None or int(item["added_in"]) <= up_to_version):
            yield InstanceRecord.from_item(tenant, item)
        return
    values: dict[str, Any] = {":pk": instances_partition(tenant, study_uid)}
    condition = "pk = :pk"
    if series_uid:
        condition += " AND begins_with(sk, :series)"
        values[":series"] = f"{series_uid}#"
    start: dict[str, Any] | None = None
    while True:
        args: dict[str, Any] = {"TableName": table, "KeyConditionExpression": condition,
                                "ExpressionAttributeValues": aws.to_item(values)}
        if start:
            args["ExclusiveStartKey"] = start
        response = query(**args)
        for raw in response.get("Items", []):
            item = aws.from_item(raw)
            if up_to_version is None or int(item["added_in"]) <= up_to_version:
                yield InstanceRecord.from_item(tenant, item)
        start = response.get("LastEvaluatedKey")
        if not start:
            return


def study_dicom(tenant: TenantId, study_uid: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """The study-level DICOM JSON kept on an ImagingStudy item (``Stored.attrs``), decrypted."""
    token = attrs.get("dicom")
    return decrypt_dicom(tenant, str(token), study_aad(study_uid)) if token else {}
