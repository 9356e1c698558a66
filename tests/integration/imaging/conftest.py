"""The imaging world: a chain with imaging orders, DICOM files uploaded to the ingest bucket and
delivered to ``dicom_ingest`` the way S3 → SQS delivers them.

DICOM files are pydicom's own test files with the test's PatientID, AccessionNumber and fresh
UIDs written in (pydicom re-encodes them in their own transfer syntax), or synthetic ones.
"""

from __future__ import annotations

import io
import itertools
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.conftest import Reply
from tests.integration.notes import conftest as notes
from tests.integration.notes.conftest import Chain, Staff, call
from tests.integration.orders.conftest import imaging_order
from tests.support.aws import REGION, LambdaContext, bucket_name

# The notes world's fixtures, requested by name by this package's tests.
admin_world, other_chain, reception = notes.admin_world, notes.other_chain, notes.reception
chain, physician, patient_id, visit = notes.chain, notes.physician, notes.patient_id, notes.visit

_MESSAGES = itertools.count()


def dicom_bytes(source: str | bytes, *, patient_id: str | None, accession: str | None,
                study_uid: str | None = None, series_uid: str | None = None, sop_uid: str | None = None,
                edit: Callable[[pydicom.Dataset], None] | None = None) -> bytes:
    """A pydicom test file (by name) or DICOM bytes with these identifiers; fresh UIDs unless given."""
    raw = pydicom.data.get_testdata_file(source, download=False) if isinstance(source, str) else io.BytesIO(source)
    ds = pydicom.dcmread(raw, force=False)
    if patient_id is not None:
        ds.PatientID = patient_id
    if accession is not None:
        ds.AccessionNumber = accession
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SOPInstanceUID = sop_uid or generate_uid()
    if "file_meta" in ds.__dict__ or getattr(ds, "file_meta", None) is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if edit is not None:
        edit(ds)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def sqs_record(body: dict[str, Any]) -> dict[str, Any]:
    n = next(_MESSAGES)
    return {"messageId": f"msg-{n}", "receiptHandle": f"r{n}", "body": json.dumps(body), "attributes": {},
            "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:expediente-ingest", "awsRegion": REGION}


def notification(bucket: str, key: str, size: int, version_id: str | None) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": urllib.parse.quote_plus(key), "size": size, "eTag": "x"}
    if version_id:
        obj["versionId"] = version_id
    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": REGION,
                         "eventTime": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                         "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": obj}}]}


@dataclass
class Imaging:
    """A chain's imaging department: orders, uploads, deliveries, and reading back."""

    chain: Chain
    physician: Staff
    radiology: Staff
    admin: Staff
    patient_id: str
    encounter_id: str
    s3: Any = field(default_factory=lambda: boto3.client("s3", region_name=REGION))

    @property
    def tenant(self) -> str:
        return self.chain.tenant.id

    def order(self, patient_id: str | None = None, encounter_id: str | None = None) -> dict[str, Any]:
        reply = self.physician.orders("POST", "/fhir/ServiceRequest",
                                      imaging_order(patient_id or self.patient_id, encounter_id or self.encounter_id))
        assert reply.status == 201, reply.body
        return dict(reply.body)

    @staticmethod
    def accession(order: dict[str, Any]) -> str:
        return next(str(i["value"]) for i in order["identifier"] if i["system"] == "urn:expediente:accession")

    def upload(self, data: bytes, key: str | None = None) -> dict[str, Any]:
        """Put an object in the ingest bucket; the S3 notification for it."""
        key = key or f"{self.tenant}/gateway/{next(_MESSAGES)}.dcm"
        put = self.s3.put_object(Bucket=bucket_name("ingest"), Key=key, Body=data)
        return notification(bucket_name("ingest"), key, len(data), put.get("VersionId"))

    def deliver(self, *notifications: dict[str, Any]) -> dict[str, Any]:
        """Deliver notifications to dicom_ingest as one SQS batch; its response (batch item failures)."""
        from functions.dicom_ingest.handler import lambda_handler

        event = {"Records": [sqs_record(n) for n in notifications]}
        response: dict[str, Any] = lambda_handler(event, LambdaContext())
        return response

    def ingest(self, data: bytes, key: str | None = None) -> dict[str, Any]:
        response = self.deliver(self.upload(data, key))
        assert response == {"batchItemFailures": []}
        return response

    def deliver_events_to_orders(self) -> list[dict[str, Any]]:
        """Deliver the DicomInstanceIngested events published so far to the orders function; return all events."""
        from functions.orders.handler import lambda_handler

        published = self.chain.world.world.published()
        records = [sqs_record(e) for e in published if e["detail-type"] == "DicomInstanceIngested"]
        if records:
            assert lambda_handler({"Records": records}, LambdaContext()) == {"batchItemFailures": []}
        return published

    def quarantine_call(self, method: str, path: str, body: Any = None, *, by: Staff | None = None,
                        **kw: Any) -> Reply:
        return call((by or self.admin).caller, "dicom_ingest", method, path, body, **kw)

    def keys(self, bucket_id: str, prefix: str = "") -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=bucket_name(bucket_id), Prefix=prefix)
        return [o["Key"] for o in listed.get("Contents", [])]


@pytest.fixture
def imaging(chain: Chain, physician: Staff, patient_id: str, visit: Any) -> Imaging:
    return Imaging(chain=chain, physician=physician, radiology=chain.staff("radiology"),
                   admin=Staff(chain.tenant.admin, None), patient_id=patient_id,
                   encounter_id=visit.encounter_id)
