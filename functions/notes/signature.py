"""Signing a note, and verifying a signature (architecture decision 8).

What is signed: the RFC 8785 canonical JSON of the final note without ``meta`` (server
bookkeeping that is not part of the document), in which every entry is pinned to the version
the author saw (``Condition/x/_history/2``) and carries the SHA-256 of that version's canonical
JSON. A later change of a diagnosis therefore never changes what was signed, and a stored note,
an entry version, or a reference that is altered or swapped afterwards fails verification.

How: a detached JWS (RFC 7515 appendix F) over those bytes, ES256 with the practitioner's KMS
key (the default), or RS256/PS256/ES256 made on the practitioner's own device with the private
key of a certificate they registered (e.firma style): ``$sign`` with ``prepare`` returns the exact
document and JWS header to sign, and ``$sign`` with ``signature`` stores it once verified. The
signature is kept in a ``Provenance`` (target = the signed version, signature.data = the JWS).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from expediente import records, signing, signing_keys
from expediente.audit import Action, AuditEntry
from expediente.clinical import ClinicalRepository, Write, check_version, now_instant, stamp
from expediente.context import RequestContext
from expediente.crypto import DecryptionFailed
from expediente.errors import Conflict, Forbidden, Invalid, Unprocessable
from expediente.index import Entry
from expediente.provenance import recorded_digest, signature_provenance
from expediente.signing_keys import KeyRecord
from expediente.store import Stored

from . import compositions
from .note_types import VITAL_SIGNS, NoteType


def signed_content(resource: dict[str, Any]) -> dict[str, Any]:
    """The part of a resource a signature covers: everything but ``meta``."""
    return {k: v for k, v in resource.items() if k != "meta"}


def entry_digest(resource: dict[str, Any]) -> str:
    """Base64 SHA-256 of an entry version's canonical JSON (without meta)."""
    return base64.b64encode(hashlib.sha256(signing.canonical(signed_content(resource))).digest()).decode()


@dataclass(frozen=True)
class Prepared:
    """The final document and the JWS header a device must sign."""

    document: dict[str, Any]   # the final note without meta
    header: dict[str, str]
    signing_input: bytes


@dataclass(frozen=True)
class Signed:
    note: dict[str, Any]
    version: int
    provenance: dict[str, Any]


def _entry_ref(entry: dict[str, Any]) -> str:
    return str(entry.get("reference", ""))


def _final(current: Stored, entries: dict[str, Stored], *, signing_time: str) -> dict[str, Any]:
    """The final note as it will be stored (without meta): status, attester, pinned entries."""
    note = copy.deepcopy(signed_content(current.resource))
    for section in note.get("section") or []:
        for entry in section.get("entry") or []:
            stored = entries[_entry_ref(entry)]
            ref = records.parse(_entry_ref(entry), where="entry", types=(stored.resource["resourceType"],))
            entry["reference"] = f"{ref.unversioned}/_history/{stored.version}"
            entry["extension"] = [e for e in entry.get("extension") or [] if e.get("url") != compositions.ENTRY_DIGEST]
            entry["extension"].append({"url": compositions.ENTRY_DIGEST,
                                       "valueBase64Binary": entry_digest(stored.resource)})
    note["status"] = "final"
    note["attester"] = [{"mode": "legal", "time": signing_time, "party": note["author"][0]}]
    return note


@dataclass(frozen=True)
class Ready:
    """A draft that passed every check for signing, with its entries read once."""

    current: Stored
    kind: NoteType
    entries: dict[str, Stored]


def ready(ctx: RequestContext, note_id: str, if_match: int, *, repo: ClinicalRepository) -> Ready:
    """The draft, checked for signing: unsigned, the version reviewed, the author, the role, the sections,
    and every entry still in the tenant and of the patient (read in one batch)."""
    current = repo.require(ctx, "Composition", note_id)
    resource = current.resource
    compositions.refuse_if_signed(current)
    check_version(current, if_match)
    author = resource["author"][0]["reference"]
    if author != f"Practitioner/{ctx.practitioner_id}":
        raise Forbidden(f"Only the author ({author}) signs this note")
    kind = compositions.note_type(resource)
    if not {role.value for role in ctx.roles} & kind.signed_by:
        raise Forbidden(f"Role {ctx.role_names} may not sign a {kind.title}")
    missing = compositions.missing_sections(resource)
    if missing:
        raise Unprocessable(f"A {kind.title} cannot be signed without: {', '.join(missing)}",
                            expression="Composition.section")
    entries = compositions.check_entries(ctx, resource, records.subject_of(resource) or "")
    if kind.vital_signs_must_include and compositions.addendum_target(resource) is None:
        _check_vital_signs(resource, entries, kind.vital_signs_must_include)
    return Ready(current, kind, entries)


def _check_vital_signs(resource: dict[str, Any], entries: dict[str, Stored], codes: tuple[str, ...]) -> None:
    section: dict[str, Any] = next(
        (s for s in resource.get("section") or [] if compositions.section_code(s) == VITAL_SIGNS), {})
    found: set[str] = set()
    for entry in section.get("entry") or []:
        stored = entries.get(_entry_ref(entry))
        if stored is not None:
            found |= {c.get("code") for c in (stored.resource.get("code") or {}).get("coding") or []}
    absent = [c for c in codes if c not in found]
    if absent:
        raise Unprocessable(f"Section signos-vitales needs weight and height Observations (LOINC "
                            f"{', '.join(absent)} missing)", expression="Composition.section")


def prepare(ctx: RequestContext, note_id: str, *, if_match: int, repo: ClinicalRepository, key: KeyRecord,
            clock: Callable[[], datetime] | None = None) -> Prepared:
    """For device signing: the exact document and header the practitioner's device signs."""
    checked = ready(ctx, note_id, if_match, repo=repo)
    signing_time = signing.format_signing_time(clock() if clock else datetime.now(UTC))
    document = _final(checked.current, checked.entries, signing_time=signing_time)
    header = signing.protected_header(alg=key.algorithms[0], kid=key.kid, signing_time=signing_time,
                                      cert_sha256=signing_keys.certificate_sha256(key))
    return Prepared(document, header, signing.signing_input(header, signing.canonical(document)))


KmsSign = Callable[[signing.KmsKey, dict[str, str], bytes], str]


def sign(ctx: RequestContext, note_id: str, *, if_match: int, repo: ClinicalRepository, key: KeyRecord,
         kms_sign: KmsSign, device_jws: str | None = None,
         new_id: Callable[[], str] = lambda: secrets.token_hex(8),
         clock: Callable[[], datetime] | None = None) -> Signed:
    """Make the note final and store its signature; from then on it never changes.

    With a KMS key the server signs (the author's authenticated session is the only way to ask);
    with a registered certificate ``device_jws`` must be the detached JWS the device made over the
    document :func:`prepare` returned.
    """
    checked = ready(ctx, note_id, if_match, repo=repo)
    moment = clock() if clock else datetime.now(UTC)
    if key.kind == signing_keys.KMS:
        if device_jws is not None:
            raise Invalid("This practitioner signs with the server-held key; send no signature parameter",
                          expression="Parameters.signature")
        document = _final(checked.current, checked.entries, signing_time=signing.format_signing_time(moment))
        return seal_with_kms(ctx, checked, document, key=key, kms_sign=kms_sign, repo=repo, moment=moment,
                             provenance_id=new_id())
    if not device_jws:
        raise Invalid("This practitioner signs on their own device: call $sign with prepare=true, sign the "
                      "signing input with the certificate's private key, and send the JWS as signature",
                      expression="Parameters.signature")
    signing_time, declared = signing_keys.device_signing_time(device_jws, key, now=moment)
    document = _final(checked.current, checked.entries, signing_time=signing_time)
    payload = signing.canonical(document)
    result = signing.verify(device_jws, payload, certificate_pem=key.certificate_pem, at=declared)
    if not result.valid:
        raise Unprocessable(f"The signature does not verify: {result.reason}. If the note or its entries "
                            "changed since prepare, prepare again", expression="Parameters.signature")
    return _store(ctx, checked, document, key=key, jws=device_jws, payload=payload, repo=repo, moment=moment,
                  provenance_id=new_id())


def seal_with_kms(ctx: RequestContext, checked: Ready, document: dict[str, Any], *, key: KeyRecord,
                  kms_sign: KmsSign, repo: ClinicalRepository, moment: datetime, provenance_id: str) -> Signed:
    """Canonicalize the final document, hash and sign it with the practitioner's KMS key, and store the
    final version with its Provenance (one KMS call, one transaction)."""
    header = signing.protected_header(alg=signing.ES256, kid=key.kid, signing_time=document["attester"][0]["time"])
    payload = signing.canonical(document)
    jws = kms_sign(signing.KmsKey(key_id=key.key_id, kid=key.kid, public_key_pem=key.public_key_pem),
                   header, payload)
    return _store(ctx, checked, document, key=key, jws=jws, payload=payload, repo=repo, moment=moment,
                  provenance_id=provenance_id)


def _store(ctx: RequestContext, checked: Ready, document: dict[str, Any], *, key: KeyRecord, jws: str,
           payload: bytes, repo: ClinicalRepository, moment: datetime, provenance_id: str) -> Signed:
    """The final version, its Provenance, the original's addendum mark and the audit record, in one transaction."""
    current = checked.current
    note_id = current.resource["id"]
    now = now_instant(lambda: moment)
    version = current.version + 1
    note = stamp(document, note_id, version, now)
    provenance = _provenance(provenance_id, note, key=key, jws=jws, payload_digest=hashlib.sha256(payload).hexdigest(),
                             now=now)
    patient = records.subject_of(note) or ""
    writes = [
        Write("Composition", note, version, compositions.index_entry(note),
              previous=compositions.index_entry(current.resource), attrs={"provenance": provenance_id}),
        # A Provenance is found through its note (the note's "provenance" attribute), so it needs no index.
        Write("Provenance", provenance, 1, Entry(sort=provenance["recorded"], facets={}), attrs={"patient": patient}),
    ]
    extra = []
    target = compositions.addendum_target(note)
    if target is not None:
        retraction = compositions._extension(note, compositions.RETRACTION) is not None
        addendum = {"id": note_id, "code": target[0], "retraction": retraction, "at": now}
        extra.append(repo.update_attrs(ctx, "Composition", target[1],
                                       expression="SET addenda = list_append(if_not_exists(addenda, :none), :new)",
                                       values={":none": [], ":new": [addendum]}))
    from expediente import events  # committed with the signature to the outbox (decision 0028)

    signed = events.NoteSigned(tenant_id=ctx.tenant, note_id=note_id, patient_id=patient, version=version,
                               note_type=compositions.note_type(note).kind, provenance_id=provenance_id,
                               addendum_of=target[1] if target else None, request_id=ctx.request_id)
    repo.save(ctx, writes, now=now, extra=extra,
              entry=AuditEntry("Composition", Action.OPERATION, note_id, (patient,), 200,
                               detail={"operation": "$sign", "type": checked.kind.kind, "kid": key.kid,
                                       **({"addendum-of": target[1]} if target else {})}), events=(signed,))
    return Signed(note, version, provenance)


def _provenance(provenance_id: str, note: dict[str, Any], *, key: KeyRecord, jws: str, payload_digest: str,
                now: str) -> dict[str, Any]:
    target = f"Composition/{note['id']}/_history/{note['meta']['versionId']}"
    provenance = signature_provenance(target=target, author=note["author"][0], when=note["attester"][0]["time"],
                                      jws=jws, payload_digest=payload_digest, kid=key.kid, recorded=now)
    return stamp(provenance, provenance_id, 1, now)


# ---------------------------------------------------------------- verify ---


@dataclass(frozen=True)
class Report:
    valid: bool
    reason: str
    checks: list[tuple[str, bool, str]]
    patient: str
    provenance: dict[str, Any] | None = None


def verify(ctx: RequestContext, note_id: str, *, repo: ClinicalRepository,
           key_for: Callable[[str, str], KeyRecord | None]) -> Report:
    """Re-check a signed note from what is stored: the document, each pinned entry, the signature."""
    current = repo.require(ctx, "Composition", note_id)
    provenance_id = current.attrs.get("provenance")
    if current.resource["status"] == "preliminary" or not provenance_id:
        raise Conflict(f"Composition/{note_id} is not signed")
    checks: list[tuple[str, bool, str]] = []
    patient = records.subject_of(current.resource) or ""
    stored_provenance = repo.get(ctx, "Provenance", str(provenance_id))
    if stored_provenance is None:
        return Report(False, "the signature record (Provenance) is missing", checks, patient)
    provenance = stored_provenance.resource
    target = records.parse(provenance["target"][0]["reference"], where="Provenance.target", types=("Composition",))
    try:
        signed = repo.get_version(ctx, "Composition", note_id, target.version or 0)
    except DecryptionFailed:
        return Report(False, "the stored note was altered: it no longer decrypts under its record", checks, patient,
                      provenance)
    if signed is None or target.id != note_id:
        return Report(False, "the signed version of the note is missing", checks, patient, provenance)
    payload = signing.canonical(signed_content(signed.resource))
    signature = provenance["signature"][0]
    try:
        jws = base64.b64decode(signature["data"]).decode()
        header, _ = signing.parse_detached_jws(jws)
    except (ValueError, Invalid):
        return Report(False, "the stored signature is malformed", checks, patient, provenance)
    practitioner = str(signature["who"].get("reference", "")).removeprefix("Practitioner/")
    key = key_for(practitioner, str(header.get("kid", "")))
    if key is None:
        reason = f"no key {header.get('kid')} is registered for Practitioner/{practitioner}"
        return Report(False, reason, checks, patient, provenance)
    at = _instant(str(header.get("sigT", "")))
    result = signing.verify(jws, payload, public_key_pem=None if key.certificate_pem else key.public_key_pem,
                            certificate_pem=key.certificate_pem or None, at=at)
    checks.append(("signature", result.valid, result.reason))
    recorded = recorded_digest(provenance)
    same = recorded == hashlib.sha256(payload).hexdigest()
    checks.append(("document digest", same, "SHA-256 of the canonical note matches the Provenance" if same
                   else "SHA-256 of the canonical note differs from the one recorded at signing"))
    if signed.resource["author"][0]["reference"] != f"Practitioner/{practitioner}":
        checks.append(("signer", False, "the signer is not the note's author"))
    for section in signed.resource.get("section") or []:
        for entry in section.get("entry") or []:
            checks.append(_check_entry(ctx, entry))
    ok = all(passed for _, passed, _ in checks)
    reason = "signature valid: the note and its entries are exactly as signed" if ok else "; ".join(
        f"{name}: {why}" for name, passed, why in checks if not passed)
    return Report(ok, reason, checks, patient, provenance)


def _check_entry(ctx: RequestContext, entry: dict[str, Any]) -> tuple[str, bool, str]:
    reference = _entry_ref(entry)
    expected = next((e.get("valueBase64Binary") for e in entry.get("extension") or []
                     if e.get("url") == compositions.ENTRY_DIGEST), None)
    try:
        ref = records.parse(reference, where="entry",
                            types=records.PENDING_TYPES | {"Condition", "Observation", "DiagnosticReport"})
        stored = records.load(ctx.tenant, ref) if ref.version is not None else None
    except (Invalid, Unprocessable, DecryptionFailed):
        stored = None
    if stored is None:
        return (reference, False, "the pinned entry version cannot be read")
    if entry_digest(stored.resource) != expected:
        return (reference, False, "the entry differs from the version that was signed")
    return (reference, True, "entry as signed")


def _instant(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def parameters(report: Report) -> dict[str, Any]:
    """The ``$verify-signature`` answer as FHIR ``Parameters``."""
    parts: list[dict[str, Any]] = [{"name": "valid", "valueBoolean": report.valid},
                                   {"name": "reason", "valueString": report.reason}]
    for name, passed, why in report.checks:
        parts.append({"name": "check", "part": [{"name": "item", "valueString": name},
                                                {"name": "valid", "valueBoolean": passed},
                                                {"name": "reason", "valueString": why}]})
    if report.provenance is not None:
        parts.append({"name": "provenance", "resource": report.provenance})
    return {"resourceType": "Parameters", "parameter": parts}


def prepared_parameters(prepared: Prepared) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "document", "resource": prepared.document},
        {"name": "header", "valueString": json.dumps(prepared.header, separators=(",", ":"), sort_keys=True)},
        {"name": "signing-input", "valueString": prepared.signing_input.decode()},
        {"name": "signing-time", "valueInstant": prepared.header["sigT"]},
    ]}
