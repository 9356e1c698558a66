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
    """An S3 bucket (KMS, versioned, TLS only). ``object_lock_years`` > 0: Object Lock in COMPLIANCE mode
    with that default retention, so no one, root included, can delete or overwrite an object version."""

    id: str
    env: str
    purpose: str
    object_lock_years: int = 0


@dataclass(frozen=True)
class QueueDef:
    id: str
    purpose: str


@dataclass(frozen=True)
class TopicDef:
    """An SNS topic (KMS-encrypted) that people's notification channels subscribe to."""

    id: str
    purpose: str


@dataclass(frozen=True)
class RuleDef:
    """An EventBridge rule on the custom bus delivering to one queue (and optionally to topics)."""

    id: str
    detail_types: tuple[str, ...]
    target_queue: str
    source: str = "expediente"
    target_topics: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScheduleDef:
    """A function invoked every ``minutes`` by an EventBridge schedule (a ``Scheduled Event``)."""

    id: str
    function: str
    minutes: int
    purpose: str


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
    # Why the public routes need no token (becomes the cdk-nag acknowledgment).
    public_reason: str = ""
    writes: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    # Buckets (by id): ``buckets_write`` read and put; ``buckets_read`` read only (e.g. to presign
    # downloads); ``buckets_upload`` put only (to presign uploads); ``buckets_delete`` remove
    # objects moved elsewhere (a delete marker: versions are kept, never ``DeleteObjectVersion``).
    buckets_write: tuple[str, ...] = ()
    buckets_read: tuple[str, ...] = ()
    buckets_upload: tuple[str, ...] = ()
    buckets_delete: tuple[str, ...] = ()
    puts_events: bool = False
    cognito_admin: bool = False
    # Practitioners' signing keys in KMS: "create" (register a practitioner: CreateKey, GetPublicKey)
    # or "sign" (sign with them); both only on keys tagged for practitioner signing.
    signing_keys: str = ""
    # Queues (by id) delivered to the function in batches; it reports the records that failed.
    consumes: tuple[str, ...] = ()
    # Other domains' packages shipped in this function's asset because it runs their rules in-process
    # (the HL7 v2 interface applies the patients and results rules to what a message carries, and
    # finds orders by their placer number).
    bundles: tuple[str, ...] = ()
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
    # MedicationRequest, DetectedIssue, AllergyIntolerance, MedicationDispense, the tenant's local Medication
    # items and formulary settings, prescription Provenance and the receta verification tokens.
    TableDef(id="prescriptions", env="TABLE_PRESCRIPTIONS"),
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
            # Each writer's hash chain by seq (decision 0022): $verify finds a record's predecessor.
            IndexDef(name="by_chain", pk="gsi3pk", sk="gsi3sk"),
        ),
    ),
    # Powertools idempotency layout: partition key "id", TTL "expiration".
    TableDef(id="idempotency", env="TABLE_IDEMPOTENCY", pk="id", sk=None, ttl_attribute="expiration",
             clinical=False),
    # Transactional outbox (decision 0028): each domain event is written in the same TransactWriteItems as
    # the change it describes (pk <tenant>#OUTBOX, sk <time>#<uuid>) and deleted once it is on the bus; the
    # outbox_relay schedule publishes what a failed PutEvents left behind. The TTL is a backstop only.
    TableDef(id="outbox", env="TABLE_OUTBOX", ttl_attribute="expires_at", clinical=False),
)

BUCKETS: tuple[BucketDef, ...] = (
    BucketDef(id="documents", env="BUCKET_DOCUMENTS", purpose="clinical documents and attachments"),
    BucketDef(id="ingest", env="BUCKET_INGEST", purpose="DICOM uploads from modalities and gateways"),
    BucketDef(id="imaging", env="BUCKET_IMAGING", purpose="imaging archive (tenant/study/series/instance)"),
    BucketDef(id="quarantine", env="BUCKET_QUARANTINE", purpose="rejected uploads with a reason"),
    BucketDef(id="audit_archive", env="BUCKET_AUDIT_ARCHIVE", purpose="audit and CloudTrail archive"),
    # ASTM E2147: the signed digests of the audit chains are kept unalterable for at least ten years.
    BucketDef(id="audit_digests", env="BUCKET_AUDIT_DIGESTS", purpose="signed digests of the audit trail's hash "
              "chains (Object Lock, compliance mode)", object_lock_years=10),
)

QUEUES: tuple[QueueDef, ...] = (
    QueueDef(id="critical_alerts", purpose="CriticalResultDetected for alerting and escalation"),
    QueueDef(id="integration", purpose="record lifecycle events for integration engines"),
    QueueDef(id="order_results",
             purpose="ResultRecorded and DicomInstanceIngested for the orders function: orders advance with their "
                     "results and images"),
    QueueDef(id="ingest", purpose="ObjectCreated notifications of the ingest bucket for dicom_ingest"),
)

TOPICS: tuple[TopicDef, ...] = (
    TopicDef(id="critical_notifications",
             purpose="critical results detected and escalated, for clinicians' notification channels"),
)

RULES: tuple[RuleDef, ...] = (
    RuleDef(id="critical_results", detail_types=("CriticalResultDetected", "CriticalResultEscalated"),
            target_queue="critical_alerts", target_topics=("critical_notifications",)),
    RuleDef(
        id="record_lifecycle",
        detail_types=("PatientRegistered", "PatientUpdated", "PatientMerged", "NoteSigned", "OrderStatusChanged",
                      "OrderMessageQueued", "CriticalResultAcknowledged", "PrescriptionSigned",
                      "PrescriptionStatusChanged", "MedicationDispensed"),
        target_queue="integration",
    ),
    RuleDef(id="results_to_orders", detail_types=("ResultRecorded", "DicomInstanceIngested"),
            target_queue="order_results"),
    RuleDef(id="imaging_lifecycle", detail_types=("DicomInstanceIngested", "DicomInstanceQuarantined"),
            target_queue="integration"),
)

SCHEDULES: tuple[ScheduleDef, ...] = (
    ScheduleDef(id="critical_escalation", function="results", minutes=1,
                purpose="escalate critical results not acknowledged within the tenant's deadline"),
    ScheduleDef(id="audit_digest", function="audit_digest", minutes=60,
                purpose="sign a digest of each tenant's audit hash chains into the Object Lock bucket"),
    ScheduleDef(id="outbox_relay", function="orders", minutes=1,
                purpose="publish the domain events whose PutEvents failed after their commit (transactional outbox)"),
)

FUNCTIONS: tuple[FunctionDef, ...] = (
    FunctionDef(
        id="patients",
        description="FHIR Patient: NOM-024 identification, search, history, merge, $everything export, ARCO",
        routes=("/fhir/Patient", "/fhir/Patient/{proxy+}"),
        writes=("patients", "audit", "idempotency", "outbox"),
        # Patient/$everything reads the patient's compartment in every domain's table (decision 2) and
        # shows it as each domain does (notes' narrative rule, imaging instances, formulary items).
        reads=("admin", "notes", "results", "orders", "prescriptions"),
        puts_events=True,
        bundles=("notes", "results", "prescriptions"),
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
            "/fhir/AuditEvent/{proxy+}",
            "/admin/users",
            "/admin/users/{proxy+}",
            "/admin/critical-results",
        ),
        public_routes=("/fhir/metadata", "/openapi.json", "/docs"),
        public_reason="clients read the CapabilityStatement and the OpenAPI description (and its page) before "
                      "they authenticate; they describe the API and return no tenant or patient data.",
        writes=("admin", "audit", "idempotency"),
        # A patient account must link a patient of the tenant (the patient's current item, nothing decrypted).
        reads=("patients",),
        # $verify reads the signed digests (decision 0022); the audit_digest function writes them.
        buckets_read=("audit_digests",),
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
        writes=("notes", "audit", "idempotency", "outbox"),
        reads=("patients", "admin", "results", "orders", "prescriptions"),
        puts_events=True,
        signing_keys="sign",
    ),
    FunctionDef(
        id="prescriptions",
        description="Formulary (Medication), allergies, prescriptions (MedicationRequest) with interaction, "
                    "allergy, duplication and dose alerts, signed receta, dispensing",
        routes=("/fhir/Medication", "/fhir/Medication/{proxy+}", "/fhir/MedicationRequest",
                "/fhir/MedicationRequest/{proxy+}", "/fhir/AllergyIntolerance", "/fhir/AllergyIntolerance/{proxy+}",
                "/fhir/DetectedIssue", "/fhir/DetectedIssue/{proxy+}", "/fhir/MedicationDispense",
                "/fhir/MedicationDispense/{proxy+}"),
        public_routes=("/receta/{token}",),
        public_reason="A pharmacy verifies a printed receta by its QR code without an account; the token is 128 "
                      "random bits, and the answer shows the prescriber, the medicines and what is left to dispense, "
                      "with the patient's initials only.",
        writes=("prescriptions", "audit", "idempotency", "outbox"),
        reads=("patients", "admin", "notes"),
        puts_events=True,
        signing_keys="sign",
    ),
    FunctionDef(
        id="orders",
        description="Lab and imaging orders (ServiceRequest): LOINC catalogue, status machine, worklists, HL7 outbox",
        routes=("/fhir/ServiceRequest", "/fhir/ServiceRequest/{proxy+}"),
        writes=("orders", "audit", "idempotency", "outbox"),
        reads=("patients", "admin", "notes", "results"),
        buckets_write=("documents",),
        buckets_upload=("ingest",),
        puts_events=True,
        consumes=("order_results",),
    ),
    FunctionDef(
        id="results",
        description="Observations (vital signs, laboratory), DiagnosticReport, critical-result alerts, "
                    "ImagingStudy and DICOMweb",
        routes=("/fhir/Observation", "/fhir/Observation/{proxy+}", "/fhir/DiagnosticReport",
                "/fhir/DiagnosticReport/{proxy+}", "/fhir/Communication", "/fhir/Communication/{proxy+}",
                "/fhir/ImagingStudy", "/fhir/ImagingStudy/{proxy+}", "/dicomweb/{proxy+}"),
        writes=("results", "audit", "idempotency", "outbox"),
        reads=("patients", "admin", "notes", "orders"),
        buckets_read=("imaging",),
        puts_events=True,
    ),
    FunctionDef(
        id="hl7v2",
        description="HL7 v2 interface: ORU^R01 results and ADT^A04/A08 registration in, ACK out",
        routes=("/hl7v2", "/hl7v2/{proxy+}"),
        writes=("patients", "results", "audit", "idempotency", "outbox"),
        reads=("admin", "notes", "orders"),
        puts_events=True,
        bundles=("patients", "results", "orders"),
    ),
    FunctionDef(
        id="dicom_ingest",
        description="DICOM ingest from S3: header-only reads, order and patient matching, archive, quarantine",
        routes=("/admin/dicom-quarantine", "/admin/dicom-quarantine/{proxy+}"),
        writes=("results", "audit", "outbox"),
        reads=("admin", "orders", "patients"),
        buckets_write=("imaging", "quarantine"),
        buckets_read=("ingest",),
        buckets_delete=("ingest", "quarantine"),
        puts_events=True,
        consumes=("ingest",),
        bundles=("orders", "patients"),
        # A server-side copy of a multi-gigabyte instance takes tens of seconds in S3.
        timeout_s=120,
    ),
    FunctionDef(
        id="audit_digest",
        description="Hourly signed digests of each tenant's audit hash chains into the Object Lock bucket",
        # The pointer to each tenant's last digest is an item of the audit table; the tenant registry is in admin.
        writes=("audit",),
        reads=("admin",),
        buckets_write=("audit_digests",),
        # Runs functions/admin/audit_integrity.py, the same code $verify checks against.
        bundles=("admin",),
        memory_mb=512,
        timeout_s=300,
    ),
)

@dataclass(frozen=True)
class GatewayResponseDef:
    """One of API Gateway's own error responses (``type`` names a CDK ``ResponseType`` member), reshaped as FHIR
    ``OperationOutcome`` (decision 1). ``status`` empty keeps API Gateway's status for that family."""

    type: str
    status: str
    code: str
    message: str

    def body(self) -> str:
        """The response body: an ``OperationOutcome`` whose diagnostics is ``message`` (raw when it is a
        ``$context`` variable that API Gateway inserts already quoted)."""
        import json

        body = json.dumps({"resourceType": "OperationOutcome",
                           "issue": [{"severity": "error", "code": self.code, "diagnostics": self.message}]})
        return body.replace(json.dumps(GATEWAY_ERROR_MESSAGE), GATEWAY_ERROR_MESSAGE)


# API Gateway's own error message, already quoted and escaped for JSON by API Gateway.
GATEWAY_ERROR_MESSAGE = "$context.error.messageString"
# The deployed API's error responses; the local front door answers with the same bodies.
GATEWAY_RESPONSES: tuple[GatewayResponseDef, ...] = (
    GatewayResponseDef("UNAUTHORIZED", "401", "login", "Missing or invalid bearer token"),
    GatewayResponseDef("ACCESS_DENIED", "403", "forbidden", "Access denied"),
    # API Gateway answers an unknown path this way; FHIR expects 404 for an unknown endpoint.
    GatewayResponseDef("MISSING_AUTHENTICATION_TOKEN", "404", "not-supported", "No such endpoint"),
    GatewayResponseDef("THROTTLED", "429", "throttled", "Too many requests"),
    GatewayResponseDef("REQUEST_TOO_LARGE", "413", "too-costly", "Request too large"),
    GatewayResponseDef("BAD_REQUEST_PARAMETERS", "400", "invalid", GATEWAY_ERROR_MESSAGE),
    GatewayResponseDef("BAD_REQUEST_BODY", "400", "invalid", GATEWAY_ERROR_MESSAGE),
    GatewayResponseDef("DEFAULT_4_XX", "", "processing", GATEWAY_ERROR_MESSAGE),
    GatewayResponseDef("DEFAULT_5_XX", "", "exception", "Internal error; request $context.requestId"),
)


def gateway_response(response_type: str) -> GatewayResponseDef:
    """The gateway response definition of ``response_type`` (raises KeyError)."""
    for response in GATEWAY_RESPONSES:
        if response.type == response_type:
            return response
    raise KeyError(response_type)


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


# The user pool's own trigger function (decision 0029): deployed with the pool in the stateful stack
# (a trigger in the stateless stack would make the stacks reference each other). It has no route and
# never reaches the pool; Cognito waits at most 5 s for a trigger.
SIGN_IN = FunctionDef(
    id="sign_in",
    description="Cognito PreAuthentication and PostAuthentication triggers: every sign-in attempt and success "
                "in the tenant's audit trail",
    writes=("audit",),
    timeout_s=5,
)
IDENTITY_FUNCTIONS: tuple[FunctionDef, ...] = (SIGN_IN,)
# Every function that is deployed: the API's and the identity ones.
ALL_FUNCTIONS: tuple[FunctionDef, ...] = (*FUNCTIONS, *IDENTITY_FUNCTIONS)
# The function that audits failed sign-ins from Cognito's sign-in event log (a log subscription): it
# reads the user's account to find the tenant, which the sign-in trigger, made before the pool, cannot.
SIGN_IN_FAILURES_FUNCTION = "admin"
# The function that verifies the audit trail ($verify): it reads the digests and the digest key's public half.
AUDIT_VERIFY_FUNCTION = "admin"


def function(function_id: str) -> FunctionDef:
    """The function definition with this id, API or identity (raises KeyError)."""
    for f in ALL_FUNCTIONS:
        if f.id == function_id:
            return f
    raise KeyError(function_id)
