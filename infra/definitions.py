"""What the system is made of, declared once.

The CDK stacks (``infra/stacks``) and the local stack (``local/``) both build
their resources from these definitions, so the embedded AWS used by ``make run``
and the tests has the same tables, indexes, buckets, event rules and routes as a
deployed stack. ``tests/infra/test_infra_local_parity.py`` and ``tests/e2e/test_local_matches_cdk.py`` prove it.

Plain Python only: no CDK or boto3 import here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class IndexDef:
    """A global secondary index with string keys, projecting all attributes."""

    name: str
    pk: str
    sk: str


@dataclass(frozen=True)
class TableDef:
    """A DynamoDB table; ``pk``/``sk`` are string keys."""

    id: str
    env: str
    pk: str = "pk"
    sk: str | None = "sk"
    indexes: tuple[IndexDef, ...] = ()
    ttl_attribute: str | None = None
    clinical: bool = True


@dataclass(frozen=True)
class BucketDef:
    id: str
    env: str
    purpose: str


@dataclass(frozen=True)
class QueueDef:
    id: str
    purpose: str


@dataclass(frozen=True)
class RuleDef:
    """An EventBridge rule on the custom bus delivering to one queue."""

    id: str
    detail_types: tuple[str, ...]
    target_queue: str
    source: str = "expediente"


@dataclass(frozen=True)
class FunctionDef:
    """One domain function and the API routes it owns.

    ``routes`` are API Gateway resource paths; each gets ``ANY``.
    ``writes``/``reads`` name tables (by id) the function may write or only read;
    ``public_routes`` need no token (the CapabilityStatement).
    """

    id: str
    description: str
    routes: tuple[str, ...] = ()
    public_routes: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    buckets_write: tuple[str, ...] = ()
    puts_events: bool = False
    cognito_admin: bool = False
    # Practitioners' signing keys in KMS: "create" (register a practitioner: CreateKey, GetPublicKey)
    # or "sign" (sign with them); both only on keys tagged for practitioner signing.
    signing_keys: str = ""
    memory_mb: int = 1024
    timeout_s: int = 15
    env: dict[str, str] = field(default_factory=dict)


SERVICE = "expediente"
EVENT_SOURCE = "expediente"

TABLES: tuple[TableDef, ...] = (
    TableDef(id="patients", env="TABLE_PATIENTS"),
    # Encounter, Composition, Condition, Provenance and their search index items.
    TableDef(id="notes", env="TABLE_NOTES"),
    # Observation (vital signs now; laboratory results, DiagnosticReport and ImagingStudy later).
    TableDef(id="results", env="TABLE_RESULTS"),
    # ServiceRequest (lab and imaging orders), their accession/placer number guards and index items.
    TableDef(id="orders", env="TABLE_ORDERS"),
    TableDef(
        id="admin",
        env="TABLE_ADMIN",
        indexes=(IndexDef(name="by_user", pk="gsi1pk", sk="gsi1sk"),),
    ),
    TableDef(
        id="audit",
        env="TABLE_AUDIT",
        indexes=(
            IndexDef(name="by_patient", pk="gsi1pk", sk="gsi1sk"),
            IndexDef(name="by_agent", pk="gsi2pk", sk="gsi2sk"),
        ),
    ),
    # Powertools idempotency layout: partition key "id", TTL "expiration".
    TableDef(id="idempotency", env="TABLE_IDEMPOTENCY", pk="id", sk=None, ttl_attribute="expiration",
             clinical=False),
)

BUCKETS: tuple[BucketDef, ...] = (
    BucketDef(id="documents", env="BUCKET_DOCUMENTS", purpose="clinical documents and attachments"),
    BucketDef(id="ingest", env="BUCKET_INGEST", purpose="DICOM uploads from modalities and gateways"),
    BucketDef(id="imaging", env="BUCKET_IMAGING", purpose="imaging archive (tenant/study/series/instance)"),
    BucketDef(id="quarantine", env="BUCKET_QUARANTINE", purpose="rejected uploads with a reason"),
    BucketDef(id="audit_archive", env="BUCKET_AUDIT_ARCHIVE", purpose="audit and CloudTrail archive"),
)

QUEUES: tuple[QueueDef, ...] = (
    QueueDef(id="critical_alerts", purpose="CriticalResultDetected for alerting and escalation"),
    QueueDef(id="integration", purpose="record lifecycle events for integration engines"),
)

RULES: tuple[RuleDef, ...] = (
    RuleDef(id="critical_results", detail_types=("CriticalResultDetected",), target_queue="critical_alerts"),
    RuleDef(
        id="record_lifecycle",
        detail_types=("PatientRegistered", "PatientUpdated", "PatientMerged", "NoteSigned", "OrderStatusChanged"),
        target_queue="integration",
    ),
)

FUNCTIONS: tuple[FunctionDef, ...] = (
    FunctionDef(
        id="patients",
        description="FHIR Patient: NOM-024 identification, search, history, merge",
        routes=("/fhir/Patient", "/fhir/Patient/{proxy+}"),
        writes=("patients", "audit", "idempotency"),
        reads=("admin",),
        puts_events=True,
    ),
    FunctionDef(
        id="admin",
        description="Tenants, clinics, practitioners, users, AuditEvent and the CapabilityStatement",
        routes=(
            "/fhir/Organization",
            "/fhir/Organization/{proxy+}",
            "/fhir/Practitioner",
            "/fhir/Practitioner/{proxy+}",
            "/fhir/AuditEvent",
            "/admin/users",
            "/admin/users/{proxy+}",
        ),
        public_routes=("/fhir/metadata",),
        writes=("admin", "audit", "idempotency"),
        reads=(),
        cognito_admin=True,
        signing_keys="create",
    ),
    FunctionDef(
        id="notes",
        description="Encounters, NOM-004 clinical notes (Composition), ICD-10 diagnoses, electronic signature",
        routes=(
            "/fhir/Encounter",
            "/fhir/Encounter/{proxy+}",
            "/fhir/Composition",
            "/fhir/Composition/{proxy+}",
            "/fhir/Condition",
            "/fhir/Condition/{proxy+}",
            "/fhir/Provenance",
            "/fhir/Provenance/{proxy+}",
        ),
        writes=("notes", "audit", "idempotency"),
        reads=("patients", "admin", "results", "orders"),
        puts_events=True,
        signing_keys="sign",
    ),
    FunctionDef(
        id="orders",
        description="Lab and imaging orders (ServiceRequest): LOINC catalogue, status machine, worklists",
        routes=("/fhir/ServiceRequest", "/fhir/ServiceRequest/{proxy+}"),
        writes=("orders", "audit", "idempotency"),
        reads=("patients", "admin", "notes"),
        puts_events=True,
    ),
    FunctionDef(
        id="results",
        description="Observations (vital signs) recorded by nurses and physicians",
        routes=("/fhir/Observation", "/fhir/Observation/{proxy+}"),
        writes=("results", "audit", "idempotency"),
        reads=("patients", "admin", "notes"),
    ),
)

# Cognito: roles are groups; tenant and clinics are custom attributes.
ROLES: tuple[str, ...] = (
    "admin",
    "physician",
    "nurse",
    "pharmacist",
    "lab",
    "radiology",
    "reception",
    "auditor",
    "patient",
)
# Roles whose users sign clinical documents: MFA is required for them.
SIGNING_ROLES: tuple[str, ...] = ("physician", "nurse", "pharmacist", "lab", "radiology")
USER_ATTRIBUTES: tuple[str, ...] = ("tenant_id", "clinic_ids", "practitioner_id", "patient_id")


def table(table_id: str) -> TableDef:
    """The table definition with this id (raises KeyError)."""
    for t in TABLES:
        if t.id == table_id:
            return t
    raise KeyError(table_id)


def function(function_id: str) -> FunctionDef:
    """The function definition with this id (raises KeyError)."""
    for f in FUNCTIONS:
        if f.id == function_id:
            return f
    raise KeyError(function_id)
