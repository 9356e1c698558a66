"""Domain events on the custom EventBridge bus: one pydantic model per type.

Producers and tests use the same models. The ``detail-type`` is the class name.
Events carry opaque ids only, never names, CURPs, diagnoses or note text.
Publishing happens after the change is committed; a failure to publish is
logged and does not undo the committed change. An event written to the
transactional outbox with its change (``store.transact(..., events=...)``,
decision 0028) is not lost by such a failure: :func:`publish` deletes its outbox
item once it is on the bus, and the relay publishes the ones left behind.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

from expediente import aws
from expediente.settings import settings

SOURCE = "expediente"
logger = Logger(service="expediente")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class DomainEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    tenant_id: str
    occurred_at: str = Field(default_factory=_now)
    request_id: str | None = None

    @classmethod
    def detail_type(cls) -> str:
        """The EventBridge ``detail-type``: the class name."""
        return cls.__name__


class PatientRegistered(DomainEvent):
    patient_id: str
    has_curp: bool


class PatientUpdated(DomainEvent):
    patient_id: str
    version: int


class PatientMerged(DomainEvent):
    source_patient_id: str
    target_patient_id: str


class NoteSigned(DomainEvent):
    """A clinical note was signed (final); ``addendum_of`` names the note it amends, if any."""

    note_id: str
    patient_id: str
    version: int
    note_type: str
    provenance_id: str
    addendum_of: str | None = None


class OrderStatusChanged(DomainEvent):
    order_id: str
    patient_id: str
    status: str
    previous_status: str | None = None


class PrescriptionSigned(DomainEvent):
    """A prescription was signed (active); ``controlled_group`` is its sale group when I-III."""

    medication_request_id: str
    patient_id: str
    version: int
    provenance_id: str
    controlled_group: str | None = None
    overridden_alerts: int = 0


class PrescriptionStatusChanged(DomainEvent):
    medication_request_id: str
    patient_id: str
    status: str
    previous_status: str


class MedicationDispensed(DomainEvent):
    """A pharmacy dispensed (part of) a prescription; ``remaining`` dispensations are left."""

    dispense_id: str
    medication_request_id: str
    patient_id: str
    remaining: int


class ResultRecorded(DomainEvent):
    """A laboratory Observation or a DiagnosticReport was stored for the orders it names.

    The orders function advances those orders (``in-process`` on the first result, ``completed``
    when the ordered test has its final result).
    """

    resource_type: str
    resource_id: str
    version: int
    patient_id: str
    status: str
    order_ids: list[str]


class CriticalResultDetected(DomainEvent):
    """A result beyond a critical limit: ``practitioner_id`` is the first clinician to call.

    Ids and the LOINC code only: the value stays in the record (read it with the API).
    """

    alert_id: str
    observation_id: str
    patient_id: str
    clinic: str
    code: str
    interpretation: str
    practitioner_id: str | None
    acknowledge_by: str


class CriticalResultEscalated(DomainEvent):
    """Nobody acknowledged the alert in time: ``practitioner_id`` is the next clinician to call."""

    alert_id: str
    observation_id: str
    patient_id: str
    clinic: str
    level: int
    practitioner_id: str | None
    acknowledge_by: str


class CriticalResultAcknowledged(DomainEvent):
    alert_id: str
    observation_id: str
    patient_id: str
    practitioner_id: str
    seconds_to_acknowledge: int
    level: int


class OrderMessageQueued(DomainEvent):
    """An outbound HL7 v2 order message is in the S3 outbox for the laboratory's interface engine."""

    order_id: str
    message_type: str
    control_id: str
    bucket: str
    object_key: str


class DicomInstanceIngested(DomainEvent):
    """An instance was archived and added to its ImagingStudy (whose id is the study UID)."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    patient_id: str
    order_id: str
    accession_number: str


class DicomInstanceQuarantined(DomainEvent):
    """An uploaded object was moved to the quarantine bucket (``object_key``) instead of being attached.

    ``tenant_id`` is ``unassigned`` when the upload's key named no registered tenant.
    """

    quarantine_id: str
    object_key: str
    reason: str


EVENT_TYPES: tuple[type[DomainEvent], ...] = (
    PatientRegistered,
    PatientUpdated,
    PatientMerged,
    NoteSigned,
    OrderStatusChanged,
    OrderMessageQueued,
    ResultRecorded,
    CriticalResultDetected,
    CriticalResultEscalated,
    CriticalResultAcknowledged,
    DicomInstanceIngested,
    DicomInstanceQuarantined,
    PrescriptionSigned,
    PrescriptionStatusChanged,
    MedicationDispensed,
)


def entry(event: DomainEvent) -> dict[str, str]:
    """The ``PutEvents`` entry for ``event``."""
    return {
        "Source": SOURCE,
        "DetailType": event.detail_type(),
        "Detail": json.dumps(event.model_dump(mode="json")),
        "EventBusName": settings().event_bus_name,
    }


PUT_EVENTS_MAX = 10  # entries per PutEvents call (EventBridge quota)


def send(entries: list[dict[str, str]]) -> list[bool]:
    """``PutEvents`` ten entries per call (the bus is added here); one flag per entry: accepted or not.

    Never raises for an AWS failure: it is logged (code only) and its entries are reported not accepted.
    """
    bus = settings().event_bus_name
    accepted: list[bool] = []
    for start in range(0, len(entries), PUT_EVENTS_MAX):
        chunk = [{**e, "EventBusName": bus} for e in entries[start:start + PUT_EVENTS_MAX]]
        try:
            response = aws.client("events").put_events(Entries=chunk)
        except (BotoCoreError, ClientError) as exc:
            logger.warning("event publish failed", extra={"error": aws.error_code(exc) or type(exc).__name__})
            accepted += [False] * len(chunk)
            continue
        results = response.get("Entries") or []
        flags = [i < len(results) and not results[i].get("ErrorCode") for i in range(len(chunk))]
        if int(response.get("FailedEntryCount", 0)) and all(flags):
            flags = [False] * len(chunk)  # a count without per-entry results: trust none of them
        if not all(flags):
            logger.warning("event publish partly failed", extra={"failed": flags.count(False)})
        accepted += flags
    return accepted


def publish(*events: DomainEvent) -> bool:
    """Put events on the bus, ten per call; returns False (and logs) if any could not be delivered.

    Events committed to the outbox in this execution context (decision 0028) have their outbox items
    deleted once delivered; an undelivered one stays there and the relay publishes it later.
    """
    from expediente import outbox

    stored = outbox.claim(events)
    entries = [entry(e) if p is None else {**p.entry, "EventBusName": settings().event_bus_name}
               for e, p in zip(events, stored, strict=True)]
    accepted = send(entries)
    outbox.delete([p for p, ok in zip(stored, accepted, strict=True) if p is not None and ok])
    return all(accepted)
