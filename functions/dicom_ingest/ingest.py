"""DICOM ingest: from an object in the ingest bucket to an instance of an ImagingStudy, or quarantine.

For each uploaded object (decision 0018):

1. The key names the tenant (``<tenant>/...``; a presigned upload's key is
   ``<tenant>/orders/<accession>/<file>``). An unknown tenant is quarantined under ``unassigned/``.
2. Only the header is read, with ranged GETs pinned to the notified version
   (:func:`header.read_header`). A notification for a version that is no longer current was
   already handled (moved or replaced) and is skipped.
3. The header's AccessionNumber finds the order; the order must be an open imaging order, and
   the header's PatientID (the CURP, the record number or the record id) must be the order's
   patient. Anything else is quarantined with a machine-readable reason; nothing is attached.
4. Accepted instances are grouped by study: the objects are copied to the archive
   (``<tenant>/<study>/<series>/<sop>.dcm``), then one transaction writes the next ImagingStudy
   version, an item and a guard per instance (by SOP Instance UID) and the audit record, then
   ``DicomInstanceIngested`` is published and the upload is deleted. Each step can be repeated:
   a redelivery finds the guards and only finishes what was left.

Transient failures (throttling, a store outage, a study written at the same moment too many
times) propagate as :class:`Retry` so the SQS record is retried; everything else ends in the
archive or the quarantine.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from expediente import audit, aws, events, imaging, records, tenants
from expediente.api import logger
from expediente.arco import RecordBlocked
from expediente.audit import Action, AuditEntry
from expediente.clinical import ClinicalRepository, Write, now_instant
from expediente.context import TENANT_ID, RequestContext, TenantId, service_context, tenant_scope
from expediente.errors import ServiceUnavailable
from expediente.settings import settings
from expediente.store import TransactionConflict, transact

from . import objects, study
from .header import Instance, Rejected, read_header

SERVICE = "dicom-ingest"
UNASSIGNED = "unassigned"
# Why an object was quarantined, beyond the header reasons of :data:`header.REASONS`.
MATCH_REASONS = (
    "unknown-tenant",  # the key does not start with a registered tenant
    "missing-accession",  # the header has no AccessionNumber
    "accession-mismatch",  # uploaded for one order (presigned URL) but the header names another
    "no-matching-order",  # no order of the tenant has that accession number
    "not-an-imaging-order",  # the accession number belongs to a laboratory order
    "order-closed",  # the order was cancelled
    "missing-patient-id",  # the header has no PatientID
    "patient-mismatch",  # PatientID is not the order's patient
    "study-conflict",  # the study is already stored for another patient or order
    "sop-conflict",  # the SOP Instance UID is already stored in another study or series
    "record-blocked",  # the order's patient's record is blocked by an ARCO cancellation request
)
PRESIGNED_PREFIX = "orders"
# Instances written per transaction (two items each, plus the study version and the audit record).
CHUNK = 40
WRITE_ATTEMPTS = 5
# A notification without a size (never from S3): let the header reader find the end.
_UNKNOWN_SIZE = 1 << 62
_CURP = re.compile(r"^[A-Z]{4}\d{6}[HMX][A-Z]{5}[A-Z0-9]\d$")


class Retry(Exception):
    """Something transient failed: the SQS record must be delivered again."""


class Quarantined(Exception):
    """The object must go to quarantine with ``reason`` (machine-readable) and ``detail`` (no patient data)."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in MATCH_REASONS:
            raise ValueError(f"unknown quarantine reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Upload:
    """One ``ObjectCreated`` notification."""

    bucket: str
    key: str
    size: int
    version_id: str | None
    event_time: str

    @property
    def tenant_prefix(self) -> str:
        return self.key.split("/", 1)[0] if "/" in self.key else ""


@dataclass
class Lookups:
    """What one batch looked up, so instances of the same study pay for their tenant, order and patient
    once: a batch lasts seconds, and an order that changes meanwhile is caught by the next batch."""

    tenants: dict[str, bool] = field(default_factory=dict)
    orders: dict[tuple[str, str], tuple[str | None, dict[str, Any] | None]] = field(default_factory=dict)
    patients: dict[tuple[str, str], str | None] = field(default_factory=dict)
    # Patients whose record was found open (not blocked by an ARCO cancellation) in this batch.
    open_records: set[tuple[str, str]] = field(default_factory=set)


@dataclass(frozen=True)
class Match:
    """Where an instance belongs."""

    order_id: str
    patient_id: str
    accession: str


@dataclass(frozen=True)
class Overrides:
    """An administrator's decision when releasing a quarantined object."""

    accession: str | None = None
    patient_confirmed: bool = False


@dataclass
class Accepted:
    """An instance ready to be stored."""

    tenant: TenantId
    source: objects.Source
    instance: Instance
    match: Match
    size: int
    archive_version: str | None = None


@dataclass
class Outcome:
    """What happened to the uploads of one batch (logged by the handler), and the quarantine events to publish."""

    ingested: int = 0
    duplicates: int = 0
    quarantined: int = 0
    skipped: int = 0
    bytes_read: int = 0
    published: list[events.DomainEvent] = field(default_factory=list)


# ------------------------------------------------------------------ notifications ---


def uploads(body: dict[str, Any]) -> list[Upload]:
    """The objects an S3 notification announces (none for ``s3:TestEvent`` or other events)."""
    found: list[Upload] = []
    for record in body.get("Records") or []:
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record.get("s3") or {}
        obj = s3.get("object") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        if not bucket or not obj.get("key"):
            continue
        found.append(Upload(bucket=str(bucket), key=urllib.parse.unquote_plus(str(obj["key"])),
                            size=int(obj.get("size") or 0), version_id=obj.get("versionId") or None,
                            event_time=str(record.get("eventTime") or now_instant())))
    return found


# ------------------------------------------------------------------ one object ---


def prepare(upload: Upload, *, outcome: Outcome, lookups: Lookups | None = None) -> Accepted | None:
    """Read and match one upload: an :class:`Accepted` instance, or None (skipped or quarantined).

    ``lookups`` is shared by the uploads of one batch.
    """
    lookups = lookups or Lookups()
    # Decision 0023: the key's prefix is only a claim; it is checked with that tenant's credentials, and
    # the object is read and matched with them only if the tenant exists (else with the execution role,
    # which reaches nothing but the ingest inbox and unassigned/ in the quarantine).
    claimed = upload.tenant_prefix
    with tenant_scope(claimed if TENANT_ID.match(claimed) else None):
        tenant = _tenant(upload, lookups)
    with tenant_scope(tenant):
        return _read_and_match(tenant, upload, outcome, lookups)


def _read_and_match(tenant: TenantId | None, upload: Upload, outcome: Outcome, lookups: Lookups) -> Accepted | None:
    source = objects.Source(upload.bucket, upload.key, upload.version_id)
    instance: Instance | None = None
    try:
        if tenant is None:
            raise Quarantined("unknown-tenant", "the key does not start with a registered tenant")
        try:
            instance = read_header(source.read, size=upload.size or _UNKNOWN_SIZE)
        finally:
            outcome.bytes_read += source.bytes_read
        found = match(tenant, instance, expected=_presigned_accession(upload), overrides=Overrides(), lookups=lookups)
        return Accepted(tenant=tenant, source=source, instance=instance, match=found,
                        size=source.size or upload.size)
    except objects.Gone:
        outcome.skipped += 1
    except (Rejected, Quarantined) as exc:
        _quarantine(tenant, upload, source, exc.reason, exc.detail, instance, outcome)
    return None


def _tenant(upload: Upload, lookups: Lookups) -> TenantId | None:
    prefix = upload.tenant_prefix
    if prefix not in lookups.tenants:
        lookups.tenants[prefix] = bool(TENANT_ID.match(prefix)) and tenants.get_tenant(prefix) is not None
    return TenantId(prefix) if lookups.tenants[prefix] else None


def _presigned_accession(upload: Upload) -> str | None:
    """The accession number a presigned upload was issued for (``<tenant>/orders/<accession>/<file>``)."""
    parts = upload.key.split("/")
    if len(parts) >= 4 and parts[1] == PRESIGNED_PREFIX:
        return parts[2]
    return None


def match(tenant: TenantId, instance: Instance, *, expected: str | None, overrides: Overrides,
          lookups: Lookups | None = None) -> Match:
    """The open imaging order and patient an instance belongs to; :class:`Quarantined` otherwise."""
    from functions.orders import logic as orders
    from functions.orders.repository import find_by_number

    accession = (overrides.accession or instance.accession_number).strip().upper()
    if not accession:
        raise Quarantined("missing-accession", "the header has no AccessionNumber (0008,0050)")
    if expected is not None and not overrides.accession and accession != expected.upper():
        raise Quarantined("accession-mismatch", "the header's AccessionNumber is not the one the upload was for")
    lookups = lookups or Lookups()
    if (tenant, accession) not in lookups.orders:
        number_owner = find_by_number(tenant, accession)
        lookups.orders[tenant, accession] = (
            number_owner, records.find(tenant, "ServiceRequest", number_owner) if number_owner else None)
    order_id, order = lookups.orders[tenant, accession]
    if order is None or order_id is None:
        raise Quarantined("no-matching-order", "no order of the tenant has this accession number")
    if orders.category_of(order) != orders.IMAGING:
        raise Quarantined("not-an-imaging-order", "the accession number belongs to a laboratory order")
    if orders.order_status(order) == "cancelled":
        raise Quarantined("order-closed", "the order was cancelled")
    patient_id = records.subject_of(order) or ""
    if (tenant, patient_id) not in lookups.open_records:
        try:
            records.find(tenant, "Patient", patient_id)  # ARCO cancellation: a blocked record takes no new images
        except RecordBlocked as exc:
            raise Quarantined("record-blocked",
                              "the patient's record is blocked by an ARCO cancellation request") from exc
        lookups.open_records.add((tenant, patient_id))
    if not overrides.patient_confirmed:
        _check_patient(tenant, instance.patient_id, patient_id, lookups)
    return Match(order_id=order_id, patient_id=patient_id, accession=accession)


def _check_patient(tenant: TenantId, header_id: str, patient_id: str, lookups: Lookups) -> None:
    """PatientID must name the order's patient: by record id, CURP (blind index) or record number."""
    from functions.patients.repository import repository as patients

    value = header_id.strip()
    if not value:
        raise Quarantined("missing-patient-id", "the header has no PatientID (0010,0020)")
    if value == patient_id:
        return
    upper = value.upper()
    if (tenant, upper) not in lookups.patients:
        ctx = service_context(tenant, SERVICE)
        lookups.patients[tenant, upper] = (patients().find_by_curp(ctx, upper) if _CURP.match(upper)
                                           else patients().find_by_folio(ctx, upper))
    if lookups.patients[tenant, upper] != patient_id:
        raise Quarantined("patient-mismatch", "PatientID is not the CURP or record number of the order's patient")


# ------------------------------------------------------------------ quarantine ---


def quarantine_id(upload: Upload) -> str:
    """Stable for one uploaded object, so a redelivered notification finds the same record."""
    digest = hashlib.sha256(f"{upload.bucket}\n{upload.key}\n{upload.version_id or ''}".encode()).hexdigest()[:16]
    # 20261125T234615.710Z -> 20261125T234615710Z: sortable to the millisecond, newest last.
    stamp_ = upload.event_time.replace("-", "").replace(":", "").replace(".", "").rstrip("Z")
    return f"{stamp_}Z-{digest}"


def _quarantine(tenant: TenantId | None, upload: Upload, source: objects.Source, reason: str, detail: str,
                instance: Instance | None, outcome: Outcome) -> None:
    """Move the object to the quarantine bucket with its reason, record it, announce it."""
    qid = quarantine_id(upload)
    owner = tenant or UNASSIGNED
    # Only our own id in the key: an uploader's file name can carry a patient's name or CURP.
    key = f"{owner}/{qid}.dcm"
    size = source.size or upload.size
    try:
        objects.copy(source, settings().bucket_quarantine, key, size=size,
                     metadata={"reason": reason, "quarantine-id": qid})
    except objects.Gone:
        outcome.skipped += 1
        return
    quarantined = events.DicomInstanceQuarantined(tenant_id=owner, quarantine_id=qid, reason=reason, object_key=key)
    if tenant is not None:
        record = {"pk": imaging.quarantine_partition(tenant), "sk": qid, "id": qid, "status": "quarantined",
                  "reason": reason, "detail": detail, "quarantine_key": key,
                  "source_key_sha256": hashlib.sha256(upload.key.encode()).hexdigest(), "size": size,
                  "received_at": upload.event_time, "quarantined_at": now_instant()}
        if instance is not None:
            record.update({"accession": instance.accession_number, "study": instance.study_uid,
                           "series": instance.series_uid, "sop": instance.sop_instance_uid,
                           "modality": instance.modality})
        ctx = service_context(tenant, SERVICE)
        with contextlib.suppress(TransactionConflict):  # recorded by an earlier delivery of the same notification
            transact([
                {"Put": {"TableName": settings().table_results, "Item": aws.to_item(record),
                         "ConditionExpression": "attribute_not_exists(pk)"}},
                *audit.audit_puts(ctx, AuditEntry(imaging.QUARANTINE, Action.CREATE, qid, (), 201,
                                                  detail={"reason": reason})),
            ], events=(quarantined,))  # the outbox (decision 0028); an unassigned upload has no tenant partition
    outcome.published.append(quarantined)
    if upload.bucket == settings().bucket_ingest:
        objects.delete(upload.bucket, upload.key)
    outcome.quarantined += 1
    logger.info("dicom object quarantined", extra={"tenant": owner, "quarantine_id": qid, "reason": reason})


# ------------------------------------------------------------------ storing a study ---


@dataclass
class Stored:
    """What storing accepted instances did: new, already stored, or in conflict (to quarantine)."""

    ingested: list[Accepted] = field(default_factory=list)
    duplicates: list[Accepted] = field(default_factory=list)
    conflicts: list[tuple[Accepted, str, str]] = field(default_factory=list)

    def add(self, other: Stored) -> None:
        self.ingested += other.ingested
        self.duplicates += other.duplicates
        self.conflicts += other.conflicts

    def announcements(self) -> list[events.DomainEvent]:
        """``DicomInstanceIngested`` for every stored instance, new or already there: an announcement
        lost when publishing failed is made again when the upload is delivered again."""
        return [events.DicomInstanceIngested(
            tenant_id=item.tenant, study_uid=item.instance.study_uid, series_uid=item.instance.series_uid,
            sop_instance_uid=item.instance.sop_instance_uid, patient_id=item.match.patient_id,
            order_id=item.match.order_id, accession_number=item.match.accession)
            for item in (*self.ingested, *self.duplicates)]


def store(accepted: Sequence[Accepted]) -> Stored:
    """Archive and record accepted instances, one study (and at most :data:`CHUNK` instances) per transaction.

    The uploads are left in place: the caller deletes them once the announcements are published.
    Raises :class:`Retry` when a study kept changing under us.
    """
    by_study: dict[tuple[str, str], list[Accepted]] = {}
    for item in accepted:
        by_study.setdefault((item.tenant, item.instance.study_uid), []).append(item)
    result = Stored()
    for group in by_study.values():
        for start in range(0, len(group), CHUNK):
            result.add(_store_chunk(group[start:start + CHUNK]))
    return result


def _store_chunk(group: list[Accepted]) -> Stored:
    ctx = service_context(group[0].tenant, SERVICE)
    for _ in range(WRITE_ATTEMPTS):
        result = _write_once(ctx, group)
        if result is not None:
            return result
    raise Retry("the study changed at the same time on every attempt")


def quarantine_conflicts(stored: Stored, outcome: Outcome) -> None:
    """Move instances that conflict with what is stored to the quarantine."""
    for item, reason, detail in stored.conflicts:
        upload = Upload(item.source.bucket, item.source.key, item.size, item.source.version_id, now_instant())
        with tenant_scope(item.tenant):
            _quarantine(item.tenant, upload, item.source, reason, detail, item.instance, outcome)


def _write_once(ctx: RequestContext, group: list[Accepted]) -> Stored | None:
    """One attempt: sort out duplicates and conflicts, archive the rest, write them in one transaction.

    None when the study or a guard changed under us (try again).
    """
    tenant = ctx.tenant
    study_uid = group[0].instance.study_uid
    repo = repository()
    current = repo.get(ctx, imaging.STUDY, study_uid)
    guards = _guards(tenant, [g.instance.sop_instance_uid for g in group])
    fresh: list[Accepted] = []
    duplicates: list[Accepted] = []
    conflicts: list[tuple[Accepted, str, str]] = []
    seen: set[str] = set()
    for item in group:
        sop = item.instance.sop_instance_uid
        guard = guards.get(sop)
        if guard is not None or sop in seen:
            same = guard is None or (guard["study"] == study_uid and guard["series"] == item.instance.series_uid)
            if same:
                duplicates.append(item)
            else:
                conflicts.append((item, "sop-conflict", "this SOP Instance UID is stored in another study or series"))
            continue
        seen.add(sop)
        fresh.append(item)
    if current is not None and fresh:
        owner = (records.subject_of(current.resource), study.order_of(current.resource))
        keep = [f for f in fresh if (f.match.patient_id, f.match.order_id) == owner]
        conflicts += [(f, "study-conflict", "the study is stored for another patient or order")
                      for f in fresh if f not in keep]
        fresh = keep
    if not fresh:
        return Stored([], duplicates, conflicts)
    for item in fresh:
        if item.archive_version is None:
            key = imaging.archive_key(tenant, study_uid, item.instance.series_uid, item.instance.sop_instance_uid)
            item.archive_version = objects.copy(item.source, settings().bucket_imaging, key, size=item.size,
                                                metadata={"tenant": tenant}) or ""
    now = now_instant()
    version = (current.version if current else 0) + 1
    head = fresh[0]
    resource = study.merged(current.resource if current else None, [f.instance for f in fresh],
                            patient_id=head.match.patient_id, order_id=head.match.order_id,
                            accession=head.match.accession, version=version, now=now)
    dicom = imaging.study_dicom(tenant, study_uid, current.attrs) if current else study.study_dicom(head.instance)
    write = Write(imaging.STUDY, resource, version, study.index_entry(resource),
                  previous=study.index_entry(current.resource) if current else None,
                  attrs={"dicom": imaging.encrypt_dicom(tenant, dicom, imaging.study_aad(study_uid)),
                         "patient": head.match.patient_id})
    ops = repo.write_ops(ctx, write, now=now)
    for item in fresh:
        ops += _instance_ops(tenant, item, version, now)
    ops += audit.audit_puts(ctx, AuditEntry(imaging.STUDY, Action.CREATE if current is None else Action.UPDATE,
                                            study_uid, (head.match.patient_id,), 201 if current is None else 200,
                                            detail={"instances": str(len(fresh)), "source": "dicom"}))
    try:
        # The new instances' DicomInstanceIngested go to the outbox with them (decision 0028): a release
        # from quarantine (an API request, no SQS redelivery) loses none when PutEvents fails.
        transact(ops, events=Stored(fresh, [], []).announcements())
    except TransactionConflict:
        return None
    return Stored(fresh, duplicates, conflicts)


def _instance_ops(tenant: TenantId, item: Accepted, version: int, now: str) -> list[dict[str, Any]]:
    instance = item.instance
    record = imaging.InstanceRecord(
        study_uid=instance.study_uid, series_uid=instance.series_uid, sop_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid, instance_number=instance.instance_number,
        number_of_frames=instance.number_of_frames, transfer_syntax_uid=instance.transfer_syntax_uid,
        size=item.size,
        archive_key=imaging.archive_key(tenant, instance.study_uid, instance.series_uid, instance.sop_instance_uid),
        added_in=version, ingested_at=now, metadata=instance.metadata, archive_version=item.archive_version or None)
    guard = {**imaging.sop_guard_key(tenant, instance.sop_instance_uid), "study": instance.study_uid,
             "series": instance.series_uid, "patient": item.match.patient_id}
    table = settings().table_results
    return [
        {"Put": {"TableName": table, "Item": aws.to_item(record.item(tenant))}},
        {"Put": {"TableName": table, "Item": aws.to_item(guard), "ConditionExpression": "attribute_not_exists(pk)"}},
    ]


def _guards(tenant: TenantId, sops: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The SOP guards that exist among ``sops`` (one BatchGetItem per 100)."""
    from expediente.store import batch_get

    table = settings().table_results
    keys = [imaging.sop_guard_key(tenant, s) for s in dict.fromkeys(sops)]
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(keys), 100):
        request: dict[str, Any] = {table: {"Keys": [aws.to_item(k) for k in keys[start:start + 100]],
                                           "ConsistentRead": True}}
        while request:
            response = batch_get(request)
            for raw in response.get("Responses", {}).get(table, []):
                item = aws.from_item(raw)
                found[str(item["pk"]).rsplit("#", 1)[-1]] = item
            request = response.get("UnprocessedKeys") or {}
    return found


@cache
def repository() -> ClinicalRepository:
    return ClinicalRepository(table=settings().table_results, types=(imaging.STUDY,))


# ------------------------------------------------------------------ a batch ---


def transient(exc: BaseException) -> bool:
    """Whether retrying the SQS record could succeed."""
    return isinstance(exc, Retry | ServiceUnavailable | BotoCoreError | ClientError)
