"""Who may do what: one declarative table (role × resource type × interaction).

This table is the single source of truth; handlers never test role names. The
``patient`` role is further limited to its own compartment by the domain logic
(:func:`expediente.context.RequestContext.require_own_patient`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Role(StrEnum):
    ADMIN = "admin"
    PHYSICIAN = "physician"
    NURSE = "nurse"
    PHARMACIST = "pharmacist"
    LAB = "lab"
    RADIOLOGY = "radiology"
    RECEPTION = "reception"
    AUDITOR = "auditor"
    PATIENT = "patient"


class Interaction(StrEnum):
    """FHIR RESTful interactions plus the operations Expediente exposes."""

    READ = "read"
    VREAD = "vread"
    HISTORY = "history"
    SEARCH = "search"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    MERGE = "$merge"
    SIGN = "$sign"
    VERIFY = "$verify-signature"
    STATUS = "$status"
    PUBLIC_KEY = "$public-key"
    REGISTER_CERTIFICATE = "$register-certificate"
    ACKNOWLEDGE = "$acknowledge"
    LASTN = "$lastn"
    TREND = "$trend"
    PRINT = "$print"
    TIME_TO_ACKNOWLEDGE = "$time-to-acknowledge"
    DICOM_UPLOAD = "$dicom-upload"
    RELEASE = "$release"
    CHECK = "$check"
    HIDE = "$hide"
    AUDIT_VERIFY = "$verify"
    EVERYTHING = "$everything"
    ARCO_CANCEL = "$arco-cancel"


_I = Interaction
_READ_ONLY: Final = frozenset({_I.READ, _I.VREAD, _I.HISTORY, _I.SEARCH})
_LOOKUP: Final = frozenset({_I.READ, _I.SEARCH})
_MAINTAIN: Final = _READ_ONLY | {_I.CREATE, _I.UPDATE}
_CLINICAL: Final = (Role.PHYSICIAN, Role.NURSE, Role.PHARMACIST, Role.LAB, Role.RADIOLOGY, Role.RECEPTION)
_OWN_RECORD: Final = frozenset({_I.READ, _I.VREAD, _I.HISTORY, _I.SEARCH})  # patient role, own compartment
_VIEWS: Final = frozenset({_I.LASTN, _I.TREND})  # results views: whoever searches results may use them

# Nobody holds DELETE on clinical data: NOM-004 5.11 forbids erasures.
PERMISSIONS: Final[dict[str, dict[Role, frozenset[Interaction]]]] = {
    "Patient": {
        # $everything (NOM-024 export, ARCO access): the physician answers an access request with the
        # full record; the administrator makes the legal copy (without narrative) and records ARCO
        # cancellations; the patient downloads their own (docs/decisions/0024-patient-access-and-arco.md).
        Role.PHYSICIAN: _MAINTAIN | {_I.EVERYTHING},
        Role.NURSE: _MAINTAIN,
        Role.RECEPTION: _MAINTAIN,
        Role.PHARMACIST: _READ_ONLY,
        Role.LAB: _READ_ONLY,
        Role.RADIOLOGY: _READ_ONLY,
        # Record management: merging confirmed duplicates is an administrative act.
        Role.ADMIN: _READ_ONLY | {_I.MERGE, _I.EVERYTHING, _I.ARCO_CANCEL},
        Role.PATIENT: frozenset({_I.READ, _I.VREAD, _I.HISTORY, _I.EVERYTHING}),
    },
    "Encounter": {
        Role.PHYSICIAN: _MAINTAIN,
        Role.NURSE: _MAINTAIN,
        # Reception opens the visit (arrival) and admits; it never reads the notes' narrative.
        Role.RECEPTION: _MAINTAIN,
        Role.PHARMACIST: _READ_ONLY,
        Role.LAB: _READ_ONLY,
        Role.RADIOLOGY: _READ_ONLY,
        Role.PATIENT: _OWN_RECORD,
    },
    # Clinical notes. Who may write or sign which note type is refined by the note rules
    # (functions/notes/note_types.py: a nurse writes and signs nursing notes only; only the author
    # signs); who reads the narrative is NARRATIVE_READERS below.
    "Composition": {
        Role.PHYSICIAN: _MAINTAIN | {_I.SIGN, _I.VERIFY},
        Role.NURSE: _MAINTAIN | {_I.SIGN, _I.VERIFY},
        Role.PHARMACIST: _READ_ONLY | {_I.VERIFY},
        Role.RADIOLOGY: _READ_ONLY | {_I.VERIFY},
        Role.LAB: _READ_ONLY,
        Role.RECEPTION: _LOOKUP,
        Role.AUDITOR: frozenset({_I.VERIFY}),
        Role.PATIENT: _OWN_RECORD | {_I.VERIFY},
    },
    "Condition": {
        Role.PHYSICIAN: _MAINTAIN,
        Role.NURSE: _READ_ONLY,
        Role.PHARMACIST: _READ_ONLY,
        Role.RADIOLOGY: _READ_ONLY,
        Role.LAB: _READ_ONLY,
        Role.PATIENT: _OWN_RECORD,
    },
    "Provenance": {
        **{role: _LOOKUP for role in (*_CLINICAL, Role.AUDITOR)},
        Role.PATIENT: _LOOKUP,
    },
    # Vital signs and laboratory results. Which role records which category (nurses and physicians
    # vital signs; the laboratory, and physicians and nurses at the point of care, laboratory results)
    # is refined in functions/results/observations.py. Acknowledging a critical result (closed loop)
    # is a physician's act.
    "Observation": {
        Role.PHYSICIAN: _MAINTAIN | _VIEWS | {_I.ACKNOWLEDGE},
        Role.NURSE: _MAINTAIN | _VIEWS,
        Role.PHARMACIST: _READ_ONLY | _VIEWS,
        Role.LAB: _MAINTAIN | _VIEWS,
        Role.RADIOLOGY: _READ_ONLY | _VIEWS,
        Role.PATIENT: _OWN_RECORD | _VIEWS,
    },
    "DiagnosticReport": {
        Role.LAB: _MAINTAIN | {_I.PRINT},
        Role.PHYSICIAN: _READ_ONLY | {_I.PRINT},
        Role.NURSE: _READ_ONLY | {_I.PRINT},
        Role.PHARMACIST: _READ_ONLY | {_I.PRINT},
        Role.RADIOLOGY: _READ_ONLY | {_I.PRINT},
        Role.PATIENT: _OWN_RECORD | {_I.PRINT},
    },
    # Critical-result alerts (closed-loop communication); written only by the results rules.
    "Communication": {
        Role.PHYSICIAN: _READ_ONLY | {_I.TIME_TO_ACKNOWLEDGE},
        Role.NURSE: _READ_ONLY | {_I.TIME_TO_ACKNOWLEDGE},
        Role.LAB: _READ_ONLY | {_I.TIME_TO_ACKNOWLEDGE},
        Role.AUDITOR: _READ_ONLY | {_I.TIME_TO_ACKNOWLEDGE},
        Role.ADMIN: frozenset({_I.SEARCH, _I.TIME_TO_ACKNOWLEDGE}),
    },
    # The tenant's critical limits, acknowledgement deadline and on-call physicians.
    "CriticalResultsPolicy": {
        Role.ADMIN: frozenset({_I.READ, _I.UPDATE}),
        **{role: frozenset({_I.READ}) for role in (Role.PHYSICIAN, Role.NURSE, Role.LAB)},
    },
    # Imaging studies, written only by the DICOM ingest; read over FHIR and DICOMweb.
    "ImagingStudy": {
        **{role: _READ_ONLY for role in (Role.PHYSICIAN, Role.NURSE, Role.RADIOLOGY)},
        Role.PATIENT: _OWN_RECORD,
    },
    # DICOM objects the ingest could not attach: administrators review and release them; radiology
    # sees what is waiting.
    "DicomQuarantine": {
        Role.ADMIN: frozenset({_I.READ, _I.SEARCH, _I.RELEASE}),
        Role.RADIOLOGY: frozenset({_I.READ, _I.SEARCH}),
    },
    # Lab and imaging orders. Which role may make which status change (the performing department
    # starts and completes, the physician cancels) is refined in functions/orders/logic.py.
    "ServiceRequest": {
        Role.PHYSICIAN: _READ_ONLY | {_I.CREATE, _I.STATUS, _I.DICOM_UPLOAD},
        Role.NURSE: _READ_ONLY,
        Role.LAB: _READ_ONLY | {_I.STATUS},
        Role.RADIOLOGY: _READ_ONLY | {_I.STATUS, _I.DICOM_UPLOAD},
        Role.RECEPTION: _LOOKUP,
        Role.PATIENT: _OWN_RECORD,
    },
    # The formulary: the shipped catalogue plus the tenant's local items; the administrator and the
    # pharmacy maintain local items and hide catalogue items the chain does not stock.
    "Medication": {
        **{role: _LOOKUP for role in (*_CLINICAL, Role.AUDITOR, Role.PATIENT)},
        Role.ADMIN: _MAINTAIN | {_I.HIDE},
        Role.PHARMACIST: _MAINTAIN | {_I.HIDE},
    },
    "AllergyIntolerance": {
        **{role: _MAINTAIN for role in (Role.PHYSICIAN, Role.NURSE, Role.PHARMACIST)},
        Role.RECEPTION: _LOOKUP,
        Role.PATIENT: _OWN_RECORD,
    },
    # Prescriptions. A nurse prescribes and signs only medicines outside sale groups I-III, which
    # only physicians sign (functions/prescriptions/controlled.py); the pharmacy verifies and prints.
    "MedicationRequest": {
        Role.PHYSICIAN: _MAINTAIN | {_I.CHECK, _I.SIGN, _I.STATUS, _I.VERIFY, _I.PRINT},
        Role.NURSE: _MAINTAIN | {_I.CHECK, _I.SIGN, _I.STATUS, _I.VERIFY, _I.PRINT},
        Role.PHARMACIST: _READ_ONLY | {_I.CHECK, _I.VERIFY, _I.PRINT},
        Role.AUDITOR: frozenset({_I.VERIFY}),
        Role.PATIENT: _OWN_RECORD | {_I.VERIFY, _I.PRINT},
    },
    # Alerts raised by the prescription checks (written by them only).
    "DetectedIssue": {
        **{role: _READ_ONLY for role in (Role.PHYSICIAN, Role.NURSE, Role.PHARMACIST)},
        Role.AUDITOR: _LOOKUP,
    },
    "MedicationDispense": {
        Role.PHARMACIST: _READ_ONLY | {_I.CREATE},
        **{role: _READ_ONLY for role in (Role.PHYSICIAN, Role.NURSE)},
        Role.PATIENT: _OWN_RECORD,
    },
    "Organization": {
        Role.ADMIN: _MAINTAIN,
        **{role: _LOOKUP for role in (*_CLINICAL, Role.AUDITOR, Role.PATIENT)},
    },
    "Practitioner": {
        Role.ADMIN: _MAINTAIN | {_I.PUBLIC_KEY},
        **{role: _LOOKUP | {_I.PUBLIC_KEY} for role in (*_CLINICAL, Role.AUDITOR)},
        # Signers register their own certificate (checked against their practitioner link).
        **{role: _LOOKUP | {_I.PUBLIC_KEY, _I.REGISTER_CERTIFICATE}
           for role in (Role.PHYSICIAN, Role.NURSE, Role.PHARMACIST, Role.LAB, Role.RADIOLOGY)},
        # Anyone holding a signed note may check its signature offline with the signer's public key.
        Role.PATIENT: frozenset({_I.PUBLIC_KEY}),
    },
    "User": {
        Role.ADMIN: frozenset({_I.READ, _I.SEARCH, _I.CREATE, _I.UPDATE}),
    },
    "AuditEvent": {
        # $verify: re-walk the hash chains and signed digests (decision 0022).
        Role.AUDITOR: _LOOKUP | {_I.AUDIT_VERIFY},
        # NOM-024 traceability and LFPDPPP access rights: who looked at my record.
        Role.PATIENT: frozenset({_I.SEARCH}),
    },
}


# Who reads the free text of clinical notes (NOM-004 confidentiality): everyone else with read
# access to a Composition sees its structure (type, date, author, status, entries) without text.
NARRATIVE_READERS: Final = frozenset({Role.PHYSICIAN, Role.NURSE, Role.PHARMACIST, Role.RADIOLOGY, Role.PATIENT})


def reads_narrative(roles: frozenset[Role]) -> bool:
    """Whether any of ``roles`` may read note narrative."""
    return bool(roles & NARRATIVE_READERS)


# Who reads a diagnosis labelled sensitive (HIV, psychiatry, substance use, STI, sexual and reproductive
# health: expediente.icd10.SENSITIVITY_RULES): the treating team and the patient. Every other role that
# reads Conditions sees that a diagnosis exists (status, dates, links) with its code masked (decision 0027).
SENSITIVE_DIAGNOSIS_READERS: Final = frozenset({Role.PHYSICIAN, Role.NURSE, Role.PATIENT})


def reads_sensitive_diagnoses(roles: frozenset[Role]) -> bool:
    """Whether any of ``roles`` may read the code of a diagnosis labelled sensitive."""
    return bool(roles & SENSITIVE_DIAGNOSIS_READERS)


def allowed(roles: frozenset[Role], resource_type: str, interaction: Interaction) -> bool:
    """Whether any of ``roles`` may perform ``interaction`` on ``resource_type``."""
    grants = PERMISSIONS.get(resource_type, {})
    return any(interaction in grants.get(role, frozenset()) for role in roles)
