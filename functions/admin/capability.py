"""The FHIR ``CapabilityStatement`` served at ``GET /fhir/metadata``.

:data:`RESOURCES` is the one declaration of what the API serves: each domain that
adds a resource type, an interaction, a search parameter or an operation adds it
here, in the same change that implements it, and ``tests/unit/admin`` checks the
statement against the permission table. Nothing else builds the statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Bump when RESOURCES changes: CapabilityStatement.date is when the statement last changed.
STATEMENT_DATE = "2026-11-26"
SOFTWARE_VERSION = "0.1.0"
FHIR_VERSION = "4.0.1"

_SP = "http://hl7.org/fhir/SearchParameter/"
# Expediente's own operations (no OperationDefinition is published for them in the FHIR core).
_OD = "https://expediente.mx/fhir/OperationDefinition/"


@dataclass(frozen=True)
class SearchParam:
    """One search parameter of a resource type (``type`` is the FHIR search-param-type code)."""

    name: str
    type: str
    documentation: str
    definition: str | None = None

    def render(self) -> dict[str, Any]:
        param: dict[str, Any] = {"name": self.name, "type": self.type, "documentation": self.documentation}
        if self.definition:
            param["definition"] = self.definition
        return param


@dataclass(frozen=True)
class Operation:
    """A FHIR operation on a resource type (``name`` without the ``$``)."""

    name: str
    definition: str
    documentation: str


@dataclass(frozen=True)
class ResourceCapability:
    """What the API does with one resource type.

    ``interactions`` are FHIR type-restful-interaction codes (``read``, ``vread``,
    ``history-instance``, ``search-type``, ``create``, ``update``).
    """

    type: str
    interactions: tuple[str, ...]
    search_params: tuple[SearchParam, ...] = ()
    operations: tuple[Operation, ...] = ()
    conditional_create: bool = False
    documentation: str = ""

    def render(self) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "type": self.type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{self.type}",
            "interaction": [{"code": code} for code in self.interactions],
        }
        if self.documentation:
            resource["documentation"] = self.documentation
        if "update" in self.interactions:
            # Updates must name the version they change (If-Match); none creates a resource.
            resource["versioning"] = "versioned-update"
            resource["updateCreate"] = False
        elif {"vread", "history-instance"} & set(self.interactions):
            resource["versioning"] = "versioned"
        if {"vread", "history-instance"} & set(self.interactions):
            resource["readHistory"] = True
        if "create" in self.interactions:
            resource["conditionalCreate"] = self.conditional_create
        if "update" in self.interactions or "create" in self.interactions:
            resource["conditionalUpdate"] = False
            # NOM-004-SSA3 5.11: nothing is ever deleted; deactivation is an update (active=false).
            resource["conditionalDelete"] = "not-supported"
        if self.search_params:
            resource["searchParam"] = [param.render() for param in self.search_params]
        if self.operations:
            resource["operation"] = [
                {"name": op.name, "definition": op.definition, "documentation": op.documentation}
                for op in self.operations
            ]
        return resource


_COUNT = SearchParam("_count", "number", "Page size (default and maximum are set per deployment); "
                     "follow the Bundle's next link (_page) for more")
_ACTIVE = SearchParam("active", "token", "true or false")
_INCLUDE = SearchParam("_include", "special", "Referenced resources to add (see documentation of the type)")
_MAINTAINED = ("read", "vread", "history-instance", "search-type", "create", "update")

RESOURCES: tuple[ResourceCapability, ...] = (
    ResourceCapability(
        type="Patient",
        interactions=_MAINTAINED,
        conditional_create=True,
        documentation="One record per patient per clinic chain (NOM-004-SSA3 5.14), identified by CURP "
        "(NOM-024-SSA3 Tabla 1). Conditional create with If-None-Exist: identifier=system|value.",
        search_params=(
            SearchParam("identifier", "token", "CURP (urn:oid:2.16.840.1.113883.4.629) or folio",
                        f"{_SP}Patient-identifier"),
            SearchParam("family", "string", "Surname(s), starts with, accent-insensitive",
                        f"{_SP}individual-family"),
            SearchParam("given", "string", "Given name(s), starts with, accent-insensitive",
                        f"{_SP}individual-given"),
            SearchParam("name", "string", "Any part of the name, starts with, accent-insensitive",
                        f"{_SP}Patient-name"),
            SearchParam("birthdate", "date", "Birth date, with eq/ge/le/gt/lt prefixes",
                        f"{_SP}individual-birthdate"),
            SearchParam("gender", "token", "male | female | other | unknown", f"{_SP}individual-gender"),
            SearchParam("active", "token", "true or false", f"{_SP}Patient-active"),
            _COUNT,
        ),
        operations=(
            Operation("merge", "http://hl7.org/fhir/OperationDefinition/Patient-merge",
                      "Merge a confirmed duplicate (source-patient) into target-patient; administrative role"),
            Operation("everything", "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                      "The whole record as one searchset Bundle (NOM-024 export, ARCO access): the patient (own "
                      "record), physicians (with narrative) and administrators (legal copy, no narrative); "
                      "_since, _type, _count and next links"),
            Operation("arco-cancel", f"{_OD}Patient-arco-cancel",
                      "Record an ARCO cancellation request (Parameters: reason, requestDate); administrative "
                      "role. The record is blocked from clinical use (403 suppressed) and kept until five "
                      "years after its last act (NOM-004-SSA3 5.4), never deleted"),
        ),
    ),
    ResourceCapability(
        type="Organization",
        interactions=_MAINTAINED,
        documentation="The clinic chain (the tenant) and its clinics: child Organizations with partOf = the chain, "
        "identified by CLUES (urn:oid:2.16.840.1.113883.4.631), unique per chain. Never deleted: deactivate "
        "with active=false.",
        search_params=(
            SearchParam("identifier", "token", "CLUES, as system|value or value", f"{_SP}Organization-identifier"),
            SearchParam("name", "string", "Name starts with, accent-insensitive", f"{_SP}Organization-name"),
            SearchParam("partof", "reference", "Organization/<id> of the parent (the chain)",
                        f"{_SP}Organization-partof"),
            SearchParam("active", "token", "true or false", f"{_SP}Organization-active"),
            _COUNT,
        ),
    ),
    ResourceCapability(
        type="Practitioner",
        interactions=_MAINTAINED,
        documentation="Health professionals of the chain, identified by cédula profesional "
        "(urn:oid:2.16.840.1.113883.3.215.12.18), unique per chain; qualification.issuer names the "
        "title-issuing institution (Ley General de Salud art. 83). Never deleted: deactivate with active=false.",
        search_params=(
            SearchParam("identifier", "token", "Cédula profesional, as system|value or value",
                        f"{_SP}Practitioner-identifier"),
            SearchParam("family", "string", "Surname(s) starts with, accent-insensitive", f"{_SP}individual-family"),
            SearchParam("given", "string", "A given name starts with, accent-insensitive", f"{_SP}individual-given"),
            SearchParam("name", "string", "Surname(s) or a given name starts with, accent-insensitive",
                        f"{_SP}Practitioner-name"),
            SearchParam("active", "token", "true or false", f"{_SP}Practitioner-active"),
            _COUNT,
        ),
        operations=(
            Operation("public-key", f"{_OD}Practitioner-public-key",
                      "GET: the practitioner's signing key (active, or ?kid=) as Parameters, or as PEM with "
                      "_format=pem (the certificate when they sign with one), to verify signatures offline"),
            Operation("register-certificate", f"{_OD}Practitioner-register-certificate",
                      "POST by the practitioner themself: an X.509 certificate (e.firma style) and a detached "
                      "JWS proving possession of its private key; it becomes their signing key"),
        ),
    ),
    ResourceCapability(
        type="Encounter",
        interactions=_MAINTAINED,
        documentation="Ambulatory (AMB), emergency (EMER) and inpatient (IMP) encounters of one patient at one "
        "of the chain's clinics (serviceProvider = the clinic, by CLUES). Status moves planned → arrived → "
        "triaged → in-progress ⇄ onleave → finished, or cancelled / entered-in-error; any other change is 409. "
        "A finished inpatient stay needs period.end (discharge). Never deleted.",
        search_params=(
            SearchParam("patient", "reference", "Patient/<id> or <id>", f"{_SP}clinical-patient"),
            SearchParam("subject", "reference", "Same as patient", f"{_SP}Encounter-subject"),
            SearchParam("service-provider", "reference", "The clinic's CLUES", f"{_SP}Encounter-service-provider"),
            SearchParam("practitioner", "reference", "Practitioner/<id>", f"{_SP}Encounter-practitioner"),
            SearchParam("status", "token", "Encounter status", f"{_SP}Encounter-status"),
            SearchParam("class", "token", "AMB | EMER | IMP", f"{_SP}Encounter-class"),
            SearchParam("date", "date", "Start of the encounter; eq/ge/gt/le/lt", f"{_SP}clinical-date"),
            _INCLUDE, _COUNT,
        ),
    ),
    ResourceCapability(
        type="Condition",
        interactions=_MAINTAINED,
        documentation="Diagnoses coded in WHO ICD-10 (http://hl7.org/fhir/sid/icd-10). Mexican spellings (I10X, "
        "E119) are accepted and stored as the WHO code (I10, E11.9); unknown codes and category headers are "
        "refused naming the code. Sensitive categories (HIV, mental health, STI, sexual and reproductive health) "
        "carry meta.security labels. Problem list: Condition?patient=<id>&clinical-status=active.",
        search_params=(
            SearchParam("patient", "reference", "Patient/<id> or <id>", f"{_SP}clinical-patient"),
            SearchParam("subject", "reference", "Same as patient", f"{_SP}Condition-subject"),
            SearchParam("encounter", "reference", "Encounter/<id>", f"{_SP}Condition-encounter"),
            SearchParam("clinical-status", "token", "active, resolved, ...", f"{_SP}Condition-clinical-status"),
            SearchParam("verification-status", "token", "confirmed, provisional, ...",
                        f"{_SP}Condition-verification-status"),
            SearchParam("category", "token", "problem-list-item | encounter-diagnosis", f"{_SP}Condition-category"),
            SearchParam("recorded-date", "date", "When recorded; eq/ge/gt/le/lt", f"{_SP}Condition-recorded-date"),
            _INCLUDE, _COUNT,
        ),
    ),
    ResourceCapability(
        type="Composition",
        interactions=_MAINTAINED,
        documentation="Clinical notes of NOM-004-SSA3 (historia clínica 34117-2, ingreso 47039-3, evolución "
        "11506-3, interconsulta 11488-4 request and reply, urgencias 34111-1, egreso 18842-5, enfermería "
        "28623-7). Written as preliminary (each save a version, If-Match); $sign by the author makes them final "
        "and immutable; corrections are signed addenda (relatesTo appends/replaces). Roles without access to "
        "narrative receive notes without text (meta.security REDACTED). Timeline: "
        "Composition?patient=<id>&_include=Composition:encounter&_revinclude=Provenance:target.",
        search_params=(
            SearchParam("patient", "reference", "Patient/<id> or <id>", f"{_SP}clinical-patient"),
            SearchParam("subject", "reference", "Same as patient", f"{_SP}Composition-subject"),
            SearchParam("encounter", "reference", "Encounter/<id>", f"{_SP}clinical-encounter"),
            SearchParam("author", "reference", "Practitioner/<id>", f"{_SP}Composition-author"),
            SearchParam("related-ref", "reference", "Composition/<id>: the addenda of a note",
                        f"{_SP}Composition-related-ref"),
            SearchParam("type", "token", "LOINC note type", f"{_SP}clinical-type"),
            SearchParam("category", "token", "Note kind (historia-clinica, evolucion, ...)",
                        f"{_SP}Composition-category"),
            SearchParam("status", "token", "preliminary | final", f"{_SP}Composition-status"),
            SearchParam("date", "date", "When written; eq/ge/gt/le/lt", f"{_SP}clinical-date"),
            _INCLUDE, SearchParam("_revinclude", "special", "Provenance:target: the notes' signatures"), _COUNT,
        ),
        operations=(
            Operation("sign", f"{_OD}Composition-sign",
                      "POST with If-Match by the note's author: checks the required sections, pins each entry's "
                      "version and signs (server-held KMS key), or with prepare=true / signature=<JWS> for a "
                      "certificate held on the practitioner's device; stores a Provenance"),
            Operation("verify-signature", f"{_OD}Composition-verify-signature",
                      "GET or POST: re-checks the stored note, every pinned entry and the signature; answers "
                      "Parameters valid/reason/check"),
        ),
    ),
    ResourceCapability(
        type="Provenance",
        interactions=("read", "search-type"),
        documentation="One per signature: target = the signed note version, signature.data = the detached JWS "
        "(application/jose) over the RFC 8785 canonical JSON of the note without meta.",
        search_params=(
            SearchParam("target", "reference", "Composition/<id>: the signature of that note",
                        f"{_SP}Provenance-target"),
        ),
    ),
    ResourceCapability(
        type="ServiceRequest",
        interactions=("read", "vread", "history-instance", "search-type", "create"),
        documentation="Lab orders (category SNOMED 108252007, code from the shipped LOINC catalogue, placer number) "
        "and imaging orders (363679005, DICOM modality in orderDetail, body site, accession number), for an open "
        "encounter, with an ICD-10 reason. The order status (extension estado-orden) moves requested → in-process "
        "→ completed, or cancelled with a reason, only through $status; every change is a version and an "
        "OrderStatusChanged event. Orders are not edited or deleted.",
        search_params=(
            SearchParam("patient", "reference", "Patient/<id> or <id>", f"{_SP}clinical-patient"),
            SearchParam("subject", "reference", "Same as patient", f"{_SP}ServiceRequest-subject"),
            SearchParam("encounter", "reference", "Encounter/<id>", f"{_SP}clinical-encounter"),
            SearchParam("clinic", "token", "The clinic's CLUES; with one status, that clinic's worklist"),
            SearchParam("identifier", "token", "Accession or placer number", f"{_SP}clinical-identifier"),
            SearchParam("status", "token", "requested | in-process | completed | cancelled (order status)"),
            SearchParam("category", "token", "108252007 (laboratory) | 363679005 (imaging)",
                        f"{_SP}ServiceRequest-category"),
            SearchParam("code", "token", "LOINC code", f"{_SP}clinical-code"),
            SearchParam("authored", "date", "When ordered; eq/ge/gt/le/lt", f"{_SP}ServiceRequest-authored"),
            _COUNT,
        ),
        operations=(
            Operation("status", f"{_OD}ServiceRequest-status",
                      "POST with If-Match: Parameters status (in-process, completed, cancelled) and reason; the lab "
                      "or radiology starts and completes, a physician or that department cancels"),
            Operation("dicom-upload", f"{_OD}ServiceRequest-dicom-upload",
                      "POST Parameters size (valueInteger, one per file): presigned PUT URLs (15 minutes, signed "
                      "Content-Length) for the DICOM files of an open imaging order"),
        ),
    ),
    ResourceCapability(
        type="Medication",
        interactions=("read", "search-type", "create", "update"),
        documentation="The formulary: the shipped catalogue of national-catalogue medicines (id = Cuadro Básico key, "
        "code.coding CNIS key and WHO ATC code; form; strength per ingredient with the WHO INN in extension dci; "
        "routes the form allows; sale group, package and usual adult maximum daily dose where a cited source gives "
        "them; every item cites its sources in extension fuente) plus the clinic's local items. The pharmacy or "
        "the administrator adds local items (POST) and gives the clinic's version of a catalogue item (PUT to its "
        "key); hidden items read as status inactive.",
        search_params=(
            SearchParam("name", "string", "Accent-insensitive prefix of any word of the generic or ingredient name"),
            SearchParam("code", "token", "Cuadro Básico key", f"{_SP}Medication-code"),
            SearchParam("atc", "token", "WHO ATC code or class prefix (e.g. C10AA)"),
            SearchParam("status", "token", "active (offered) | inactive (hidden by the clinic)",
                        f"{_SP}Medication-status"),
            _COUNT,
        ),
        operations=(
            Operation("hide", f"{_OD}Medication-hide",
                      "POST Parameters hidden (valueBoolean, default true): hide a catalogue item the clinic does "
                      "not stock, or offer it again"),
        ),
    ),
    ResourceCapability(
        type="AllergyIntolerance",
        interactions=_MAINTAINED,
        documentation="Allergies and intolerances per patient, by ingredient (https://expediente.mx/fhir/CodeSystem/"
        "dci, WHO INN), ATC class (http://www.whocc.no/atc, e.g. J01C penicillins) or Cuadro Básico key, with "
        "criticality; prescriptions are checked against the active ones, including cross-reactive classes.",
        search_params=(
            SearchParam("patient", "reference", "Patient/<id> or <id>", f"{_SP}clinical-patient"),
            SearchParam("clinical-status", "token", "active | inactive | resolved",
                        f"{_SP}AllergyIntolerance-clinical-status"),
            SearchParam("criticality", "token", "low | high | unable-to-assess",
                        f"{_SP}AllergyIntolerance-criticality"),
            _COUNT,
        ),
    ),
    ResourceCapability(
        type="MedicationRequest",
        interactions=_MAINTAINED,
        documentation="Prescriptions of a formulary medicine with a complete dosage (dose in UCUM, a route the form "
        "allows, timing.repeat frequency/period and boundsDuration, dispenseRequest.quantity in {package} or "
        "presentation units). Created and revised as draft; active only through $sign; signed prescriptions never "
        "change. Each create, revision and signature re-checks interactions, allergies, duplication and the "
        "maximum daily dose against the patient's current prescriptions; alerts are DetectedIssues listed in "
        "detectedIssue and counted in the X-Alerts header. Sale groups I-III follow LGS art. 226 (pad number, "
        "30 days, 2 packages, dispensations) and are signed by physicians only.",
        search_params=(
            SearchParam("patient", "reference", "Patient/<id> or <id>", f"{_SP}clinical-patient"),
            SearchParam("subject", "reference", "Same as patient", f"{_SP}MedicationRequest-subject"),
            SearchParam("encounter", "reference", "Encounter/<id>", f"{_SP}MedicationRequest-encounter"),
            SearchParam("requester", "reference", "Practitioner/<id>", f"{_SP}MedicationRequest-requester"),
            SearchParam("status", "token", "draft | active | completed | stopped | cancelled",
                        f"{_SP}medications-status"),
            SearchParam("code", "token", "The formulary item (Cuadro Básico key or local id)",
                        f"{_SP}clinical-code"),
            SearchParam("authoredon", "date", "When written; eq/ge/gt/le/lt", f"{_SP}MedicationRequest-authoredon"),
            _COUNT,
        ),
        operations=(
            Operation("check", f"{_OD}MedicationRequest-check",
                      "POST a proposed MedicationRequest (or a Bundle of them): the alerts as unsaved DetectedIssues; "
                      "nothing is stored"),
            Operation("sign", f"{_OD}MedicationRequest-sign",
                      "POST with If-Match, Parameters overrideReason or override (issue, reason) for each "
                      "contraindicated or major alert: the prescriber's signature (ES256, KMS key); answers the "
                      "active version, X-Provenance and X-Receta-Verify (the QR code's URL); 409 listing the alerts "
                      "that still need a reason"),
            Operation("status", f"{_OD}MedicationRequest-status",
                      "POST with If-Match: Parameters status (completed, stopped, cancelled) and reason"),
            Operation("verify-signature", f"{_OD}MedicationRequest-verify-signature",
                      "GET: re-verifies the stored signature; Parameters valid, reason, provenance"),
            Operation("print", f"{_OD}MedicationRequest-print",
                      "GET (Accept: application/pdf): the printable receta with its QR verification code"),
        ),
    ),
    ResourceCapability(
        type="DetectedIssue",
        interactions=("read", "vread", "history-instance", "search-type"),
        documentation="Prescription alerts, written by the checks only (code v3 ActCode DRG, ALGY, RALG, DUPTHPGEN, "
        "DUPTHPCLS, DOSEH; extension severidad-alerta contraindicated | major | moderate | minor; the rule, its "
        "citation and management). An override is a mitigation with the prescriber's reason; an alert that no "
        "longer applies becomes cancelled.",
        search_params=(
            SearchParam("implicated", "reference", "MedicationRequest/<id>", f"{_SP}DetectedIssue-implicated"),
            SearchParam("patient", "reference", "Patient/<id> or <id>", f"{_SP}clinical-patient"),
            SearchParam("code", "token", "DRG | ALGY | RALG | DUPTHPGEN | DUPTHPCLS | DOSEH",
                        f"{_SP}DetectedIssue-code"),
            SearchParam("identified", "date", "When raised; eq/ge/gt/le/lt", f"{_SP}DetectedIssue-identified"),
            _COUNT,
        ),
    ),
    ResourceCapability(
        type="MedicationDispense",
        interactions=("read", "vread", "history-instance", "search-type", "create"),
        documentation="A pharmacy's dispensation of a signed, active, unexpired prescription (authorizingPrescription) "
        "within its allowed dispensations; the last one completes the prescription. X-Dispensations-Remaining "
        "answers what is left.",
        search_params=(
            SearchParam("prescription", "reference", "MedicationRequest/<id>", f"{_SP}MedicationDispense-prescription"),
            SearchParam("patient", "reference", "Patient/<id> or <id>", f"{_SP}clinical-patient"),
            SearchParam("whenhandedover", "date", "When handed over; eq/ge/gt/le/lt",
                        f"{_SP}MedicationDispense-whenhandedover"),
            _COUNT,
        ),
    ),
    ResourceCapability(
        type="ImagingStudy",
        interactions=("read", "vread", "history-instance", "search-type"),
        documentation="Written only by the DICOM ingest (id = Study Instance UID): the study, its series and "
        "instances, subject = the order's patient, basedOn = the imaging order, identifier = the study UID and the "
        "accession number. Each ingest batch that adds instances is a new version. DICOMweb (QIDO-RS, WADO-RS, "
        "thumbnails) serves the same studies under /dicomweb.",
        search_params=(
            SearchParam("patient", "reference", "Patient/<id> or <id>", f"{_SP}clinical-patient"),
            SearchParam("subject", "reference", "Same as patient", f"{_SP}ImagingStudy-subject"),
            SearchParam("basedon", "reference", "ServiceRequest/<id>", f"{_SP}ImagingStudy-basedon"),
            SearchParam("identifier", "token", "Accession number or urn:oid:<study UID>",
                        f"{_SP}clinical-identifier"),
            SearchParam("modality", "token", "DICOM modality code (CT, MR, DX, ...)", f"{_SP}ImagingStudy-modality"),
            SearchParam("started", "date", "When the study started; eq/ge/gt/le/lt", f"{_SP}ImagingStudy-started"),
            _COUNT,
        ),
    ),
    ResourceCapability(
        type="Observation",
        interactions=_MAINTAINED,
        documentation="Vital signs (LOINC 8310-5, 8867-4, 9279-1, 85354-9 with 8480-6/8462-4, 29463-7, 8302-2, "
        "39156-5, 59408-5) with UCUM units and plausible-range checks, and laboratory results (a test of the "
        "shipped LOINC catalogue; valueQuantity in UCUM, valueString, valueCodeableConcept or dataAbsentReason; "
        "referenceRange; basedOn = the laboratory ServiceRequest). The server sets the interpretation (L/N/H "
        "from the range, LL/HH from the tenant's critical limits or the laboratory's own critical flag); a "
        "critical result opens a Communication alert and a CriticalResultDetected event. Corrections are new "
        "versions (corrected/amended); results are never deleted.",
        search_params=(
            SearchParam("patient", "reference", "Patient/<id> or <id>", f"{_SP}clinical-patient"),
            SearchParam("subject", "reference", "Same as patient", f"{_SP}Observation-subject"),
            SearchParam("encounter", "reference", "Encounter/<id>", f"{_SP}clinical-encounter"),
            SearchParam("based-on", "reference", "ServiceRequest/<id>: the results of an order",
                        f"{_SP}Observation-based-on"),
            SearchParam("category", "token", "vital-signs | laboratory", f"{_SP}Observation-category"),
            SearchParam("code", "token", "LOINC code", f"{_SP}clinical-code"),
            SearchParam("status", "token", "final, amended, ...", f"{_SP}Observation-status"),
            SearchParam("date", "date", "When measured; eq/ge/gt/le/lt", f"{_SP}clinical-date"),
            _COUNT,
        ),
        operations=(
            Operation("lastn", "http://hl7.org/fhir/OperationDefinition/Observation-lastn",
                      "GET ?patient=&category=|code=&max=: the latest max (1-10) results of each code"),
            Operation("trend", f"{_OD}Observation-trend",
                      "GET ?patient=&code=[&date=]: one test over time, oldest first, as Parameters points "
                      "(value, unit, low, high, interpretation, status) ready for a chart"),
            Operation("acknowledge", f"{_OD}Observation-acknowledge",
                      "POST Parameters readBack: a physician who was notified, is on call or works at the clinic "
                      "acknowledges the open critical-result alert of this Observation (closed loop)"),
        ),
    ),
    ResourceCapability(
        type="DiagnosticReport",
        interactions=_MAINTAINED,
        documentation="Laboratory reports: code (LOINC test or panel), basedOn the lab orders, result = that "
        "patient's laboratory Observations (final reports group final results only), conclusion, presentedForm "
        "(the printable report, HTML or PDF). A final report completes its order. From the API (lab role) and "
        "from HL7 v2 ORU^R01 (one report per order group).",
        search_params=(
            SearchParam("patient", "reference", "Patient/<id> or <id>", f"{_SP}clinical-patient"),
            SearchParam("subject", "reference", "Same as patient", f"{_SP}DiagnosticReport-subject"),
            SearchParam("encounter", "reference", "Encounter/<id>", f"{_SP}clinical-encounter"),
            SearchParam("based-on", "reference", "ServiceRequest/<id>", f"{_SP}DiagnosticReport-based-on"),
            SearchParam("code", "token", "LOINC code", f"{_SP}clinical-code"),
            SearchParam("status", "token", "registered | partial | preliminary | final | ...",
                        f"{_SP}DiagnosticReport-status"),
            SearchParam("date", "date", "Clinically relevant time; eq/ge/gt/le/lt", f"{_SP}clinical-date"),
            SearchParam("_include", "special", "DiagnosticReport:result"),
            _COUNT,
        ),
        operations=(
            Operation("print", f"{_OD}DiagnosticReport-print",
                      "GET ?_format=pdf|html: the printable report with a small trend chart per abnormal test"),
        ),
    ),
    ResourceCapability(
        type="Communication",
        interactions=("read", "vread", "history-instance", "search-type"),
        documentation="Critical-result alerts (category alert, priority stat), written by the server: in-progress "
        "until a physician acknowledges it ($acknowledge on the Observation: received, acknowledged-by, payload = "
        "the read-back), recipient = everyone notified, escalated to the next contact at each missed deadline "
        "(extensions acknowledge-by, escalation-level; every escalation is a version).",
        search_params=(
            SearchParam("patient", "reference", "Patient/<id> or <id>", f"{_SP}clinical-patient"),
            SearchParam("clinic", "token", "The clinic's CLUES"),
            SearchParam("about", "reference", "Observation/<id>"),
            SearchParam("status", "token", "in-progress | completed", f"{_SP}Communication-status"),
            SearchParam("sent", "date", "When detected; eq/ge/gt/le/lt", f"{_SP}Communication-sent"),
            SearchParam("_include", "special", "Communication:about"),
            _COUNT,
        ),
        operations=(
            Operation("time-to-acknowledge", f"{_OD}Communication-time-to-acknowledge",
                      "GET ?clinic=&date=: alerts, acknowledged, open, overdue, escalated and the median, p90 "
                      "and maximum seconds to acknowledge"),
        ),
    ),
    ResourceCapability(
        type="AuditEvent",
        interactions=("search-type",),
        documentation="The application audit trail (NOM-024-SSA3 traceability), read-only: the auditor role "
        "sees the whole chain, the patient role only the records about their own patient record. Results are "
        "newest first unless _sort=date.",
        search_params=(
            SearchParam("patient", "reference", "Patient/<id> or <id>", f"{_SP}AuditEvent-patient"),
            SearchParam("agent", "reference", "The acting user's id (Cognito sub)", f"{_SP}AuditEvent-agent"),
            SearchParam("date", "date", "When recorded; ge/gt/le/lt/eq prefixes; at most two values (AND)",
                        f"{_SP}AuditEvent-date"),
            SearchParam("_sort", "special", "date (oldest first) or -date (newest first, the default)"),
            SearchParam("_format", "special", "text/csv: the page as a CSV report (auditor; or Accept: text/csv)"),
            _COUNT,
        ),
        operations=(
            Operation("verify", f"{_OD}AuditEvent-verify",
                      "GET ?start=&end= (auditor): re-walks the period's hash chains and signed digests and "
                      "reports every altered, inserted or deleted record (Parameters)"),
        ),
    ),
)


def capability_statement(base_url: str) -> dict[str, Any]:
    """The ``CapabilityStatement`` (FHIR R4 4.0.1) of this deployment, rooted at ``base_url``."""
    return {
        "resourceType": "CapabilityStatement",
        "id": "expediente",
        "url": f"{base_url}/fhir/metadata",
        "version": SOFTWARE_VERSION,
        "name": "ExpedienteCapabilityStatement",
        "title": "Expediente: expediente clínico electrónico (NOM-024-SSA3-2012, NOM-004-SSA3-2012)",
        "status": "active",
        "experimental": False,
        "date": STATEMENT_DATE,
        "publisher": "Expediente",
        "kind": "instance",
        "software": {"name": "Expediente", "version": SOFTWARE_VERSION},
        "implementation": {"description": "Expediente FHIR R4 API", "url": f"{base_url}/fhir"},
        "fhirVersion": FHIR_VERSION,
        "format": ["json", "application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Every request except this statement needs a Cognito ID token "
                "(Authorization: Bearer). POST accepts an Idempotency-Key header. Errors are OperationOutcome.",
                "security": {
                    "cors": True,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "OAuth",
                                }
                            ],
                            "text": "Amazon Cognito user pool (OAuth 2.0 / OpenID Connect ID tokens)",
                        }
                    ],
                    "description": "The tenant (clinic chain), roles and clinics come only from the verified "
                    "token; a resource of another chain answers 404.",
                },
                "resource": [resource.render() for resource in RESOURCES],
            }
        ],
    }
