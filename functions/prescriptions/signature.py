"""Signing a prescription (``$sign``) and verifying it, with the notes' signature scheme.

What is signed: the RFC 8785 canonical JSON of the active prescription without ``meta``; how:
a detached JWS, ES256 with the prescriber's KMS key (the default) or made on the prescriber's own
device with a registered certificate (``$sign`` with ``prepare``, then with ``signature``), kept
in a ``Provenance`` whose target is the signed version (docs/decisions/0011-electronic-signature.md).
Signing re-runs the checks; each contraindicated or major alert needs the prescriber's override
reason, which is stored in the alert (``DetectedIssue.mitigation``) and audited. The signature also
issues the receta's verification token (the QR code's URL) and fixes how many dispensations the
receta allows.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from expediente import audit, records, signing, signing_keys
from expediente.audit import Action, AuditEntry
from expediente.clinical import ClinicalRepository, Write, check_version, now_instant, stamp
from expediente.context import RequestContext, TenantId
from expediente.errors import DomainError, Invalid, Unprocessable
from expediente.index import Entry
from expediente.provenance import recorded_digest, signature_provenance
from expediente.signing_keys import KeyRecord
from expediente.store import Stored

from . import controlled, dosing, logic
from .formulary import Formulary, Item
from .logic import ISSUE, MR, Outcome
from .repository import token_item

KmsSign = Callable[[signing.KmsKey, dict[str, str], bytes], str]
BLOCKING = ("contraindicated", "major")


def signed_content(resource: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


@dataclass(frozen=True)
class Signed:
    resource: dict[str, Any]
    version: int
    provenance: dict[str, Any]
    token: str
    overridden: int
    alerts: list[dict[str, Any]]
    group: str | None


@dataclass(frozen=True)
class Prepared:
    """For device signing: the exact document and JWS header the prescriber's device signs."""

    document: dict[str, Any]
    header: dict[str, str]
    signing_input: bytes


@dataclass(frozen=True)
class _Plan:
    """A draft that passed every check for signing, with the alert versions its signature writes."""

    current: Stored
    item: Item
    dosage: dosing.Dosage
    patient: str
    issues: list[dict[str, Any]]
    references: list[dict[str, Any]]
    writes: dict[str, Write]
    overrides: list[tuple[dict[str, Any], str]]


def _plan(ctx: RequestContext, prescription_id: str, *, if_match: int, repo: ClinicalRepository,
          formulary: Formulary, reasons: Mapping[str, str], general_reason: str | None, now: str) -> _Plan | Outcome:
    """Check the draft for signing: unsigned, the version reviewed, the prescriber, the sale group's rules,
    and the alerts re-run; :class:`Outcome` listing the blocking alerts that still lack a reason."""
    current = repo.require(ctx, MR, prescription_id)
    logic.refuse_if_signed(current)
    check_version(current, if_match)
    logic._only_prescriber(ctx, current.resource, "signs")
    item = logic.item_of(current.resource, formulary, include_hidden=True)
    logic.signer_may_sign(ctx, item)
    dosage = dosing.parse(current.resource, item)
    controlled.check(current.resource, item, dosage)
    patient = records.subject_of(current.resource) or ""
    alerts = logic.run_checks(ctx, repo, formulary, patient, logic._medicine(None, item, dosage),
                              exclude=prescription_id)
    reconciled = logic.reconcile(ctx, repo, prescription_id, patient, alerts, logic._issue_ids(current.resource),
                                 now=now)
    unknown = sorted(set(reasons) - {i["id"] for i in reconciled.issues})
    if unknown:
        raise Unprocessable(f"override names alerts this prescription does not have: {', '.join(unknown)}",
                            expression="Parameters.override")
    missing = [i for i in reconciled.issues if logic.severity_of(i) in BLOCKING and not logic.overridden(i)
               and not (reasons.get(i["id"]) or general_reason)]
    if missing:
        return Outcome(current.resource, current.version, missing)
    writes = {w.id: w for w in reconciled.writes}
    overrides: list[tuple[dict[str, Any], str]] = []
    issues: list[dict[str, Any]] = []
    for issue in reconciled.issues:
        reason = reasons.get(issue["id"]) or general_reason
        if logic.severity_of(issue) not in BLOCKING or logic.overridden(issue) or not reason:
            issues.append(issue)
            continue
        pending = writes.get(issue["id"])
        version = pending.version if pending else int(issue["meta"]["versionId"]) + 1
        mitigated = stamp({**issue, "status": "final", "mitigation": [{
            "action": {"coding": [{"system": logic.ALERT_ACTION_SYSTEM, "code": "override",
                                   "display": "Alerta revisada; el prescriptor decide continuar"}],
                       "text": reason.strip()[:1000]},
            "date": now, "author": {"reference": f"Practitioner/{ctx.practitioner_id}"}}]}, issue["id"], version, now)
        writes[issue["id"]] = Write(ISSUE, mitigated, version, logic.issue_entry(mitigated),
                                    previous=pending.previous if pending else logic.issue_entry(issue))
        overrides.append((mitigated, logic.severity_of(issue)))
        issues.append(mitigated)
    return _Plan(current, item, dosage, patient, issues, reconciled.references, writes, overrides)


def _document(plan: _Plan, signed_at: datetime) -> dict[str, Any]:
    """The active prescription as signed (without meta): a function of the draft, its alerts and the
    signing time only, so a device and the server build the same bytes."""
    rule = controlled.rule_for(plan.item)
    document = signed_content(plan.current.resource)
    document["status"] = "active"
    if plan.references:
        document["detectedIssue"] = [{"reference": f"{ISSUE}/{i['id']}", "display": ref["display"]}
                                     for i, ref in zip(plan.issues, plan.references, strict=True)]
    else:
        document.pop("detectedIssue", None)
    allowed = controlled.dispensations_allowed(plan.item, plan.dosage)
    dispense_request = dict(document.get("dispenseRequest") or {})
    if rule is not None and rule.validity_days:
        dispense_request["validityPeriod"] = {
            "start": now_instant(lambda: signed_at),
            "end": now_instant(lambda: signed_at + timedelta(days=rule.validity_days or 0))}
    dispense_request["numberOfRepeatsAllowed"] = allowed - 1
    document["dispenseRequest"] = dispense_request
    document["extension"] = [e for e in document.get("extension") or [] if e.get("url") != logic.EXT_DISPENSATIONS]
    document["extension"].append({"url": logic.EXT_DISPENSATIONS, "valueInteger": allowed})
    return document


def prepare(ctx: RequestContext, prescription_id: str, *, if_match: int, repo: ClinicalRepository,
            formulary: Formulary, key: KeyRecord, reasons: Mapping[str, str], general_reason: str | None,
            clock: Callable[[], datetime] | None = None) -> Prepared | Outcome:
    """For a prescriber who signs on their own device (a registered certificate): the exact document and
    header to sign. The same override reasons must be sent again with the signature."""
    moment = clock() if clock else datetime.now(UTC)
    plan = _plan(ctx, prescription_id, if_match=if_match, repo=repo, formulary=formulary, reasons=reasons,
                 general_reason=general_reason, now=now_instant(lambda: moment))
    if isinstance(plan, Outcome):
        return plan
    signing_time = signing.format_signing_time(moment)
    document = _document(plan, signing.parse_signing_time(signing_time))
    header = signing.protected_header(alg=key.algorithms[0], kid=key.kid, signing_time=signing_time,
                                      cert_sha256=signing_keys.certificate_sha256(key))
    return Prepared(document, header, signing.signing_input(header, signing.canonical(document)))


def prepared_parameters(prepared: Prepared) -> dict[str, Any]:
    import json

    return {"resourceType": "Parameters", "parameter": [
        {"name": "document", "resource": prepared.document},
        {"name": "header", "valueString": json.dumps(prepared.header, separators=(",", ":"), sort_keys=True)},
        {"name": "signing-input", "valueString": prepared.signing_input.decode()},
        {"name": "signing-time", "valueInstant": prepared.header["sigT"]},
    ]}


def sign(ctx: RequestContext, prescription_id: str, *, if_match: int, repo: ClinicalRepository,
         formulary: Formulary, key: KeyRecord, kms_sign: KmsSign, reasons: Mapping[str, str],
         general_reason: str | None, new_id: Callable[[], str], device_jws: str | None = None,
         token: Callable[[], str] = logic.new_token, clock: Callable[[], datetime] | None = None) -> Signed | Outcome:
    """Sign a draft: re-check, require override reasons for blocking alerts, store the active version,
    the alerts, the Provenance, the token and the audit records in one transaction.

    With a KMS key the server signs; with a registered certificate ``device_jws`` is the detached JWS
    the device made over the document :func:`prepare` returned. Returns :class:`Outcome` (nothing
    signed) when blocking alerts still lack a reason; the caller answers 409 with them.
    """
    moment = clock() if clock else datetime.now(UTC)
    now = now_instant(lambda: moment)
    if key.kind == signing_keys.KMS and device_jws is not None:
        raise Invalid("This practitioner signs with the server-held key; send no signature parameter",
                      expression="Parameters.signature")
    if key.kind != signing_keys.KMS and not device_jws:
        raise Invalid("This practitioner signs on their own device: call $sign with prepare=true, sign the signing "
                      "input with the certificate's private key, and send the JWS as signature",
                      expression="Parameters.signature")
    plan = _plan(ctx, prescription_id, if_match=if_match, repo=repo, formulary=formulary, reasons=reasons,
                 general_reason=general_reason, now=now)
    if isinstance(plan, Outcome):
        return plan
    if device_jws is None:
        signing_time = signing.format_signing_time(moment)
        header = signing.protected_header(alg=signing.ES256, kid=key.kid, signing_time=signing_time)
        document = _document(plan, signing.parse_signing_time(signing_time))
        payload = signing.canonical(document)
        jws = kms_sign(signing.KmsKey(key_id=key.key_id, kid=key.kid, public_key_pem=key.public_key_pem), header,
                       payload)
    else:
        signing_time, declared = signing_keys.device_signing_time(device_jws, key, now=moment)
        document = _document(plan, declared)
        payload = signing.canonical(document)
        result = signing.verify(device_jws, payload, certificate_pem=key.certificate_pem, at=declared)
        if not result.valid:
            raise Unprocessable(f"The signature does not verify: {result.reason}. If the prescription or its alerts "
                                "changed since prepare, prepare again", expression="Parameters.signature")
        jws = device_jws
    return _store(ctx, plan, document, key=key, jws=jws, when=signing_time, payload=payload, repo=repo, now=now,
                  provenance_id=new_id(), receta_token=token())


def _store(ctx: RequestContext, plan: _Plan, document: dict[str, Any], *, key: KeyRecord, jws: str, when: str,
           payload: bytes, repo: ClinicalRepository, now: str, provenance_id: str, receta_token: str) -> Signed:
    current, prescription_id = plan.current, plan.current.resource["id"]
    version = current.version + 1
    resource = stamp(document, prescription_id, version, now)
    provenance = stamp(signature_provenance(
        target=f"{MR}/{prescription_id}/_history/{version}", author=dict(resource["requester"]), when=when, jws=jws,
        payload_digest=hashlib.sha256(payload).hexdigest(), kid=key.kid, recorded=now), provenance_id, 1, now)
    allowed = controlled.dispensations_allowed(plan.item, plan.dosage)
    attrs = {**current.attrs, "provenance": provenance_id, "token": receta_token, "allowed": allowed,
             "dispensed": 0, "signed_version": version}
    extra: list[dict[str, Any]] = [token_item(receta_token, ctx.tenant, prescription_id)]
    for mitigated, severity in plan.overrides:
        extra += audit.audit_puts(ctx, AuditEntry(ISSUE, Action.OPERATION, mitigated["id"], (plan.patient,), 200,
                                                  detail={"operation": "$override", "prescription": prescription_id,
                                                          "severity": severity}))
    group = plan.item.sale_group
    from expediente import events  # committed with the signature to the outbox (decision 0028)

    signed = events.PrescriptionSigned(
        tenant_id=ctx.tenant, medication_request_id=prescription_id, patient_id=records.subject_of(resource) or "",
        version=version, provenance_id=provenance_id, controlled_group=group if group in ("I", "II", "III") else None,
        overridden_alerts=len(plan.overrides), request_id=ctx.request_id)
    repo.save(ctx, [Write(MR, resource, version, logic.index_entry(resource),
                          previous=logic.index_entry(current.resource), attrs=attrs),
                    Write("Provenance", provenance, 1, Entry(sort=now, facets={}), attrs={"patient": plan.patient}),
                    *plan.writes.values()], now=now, extra=extra,
              entry=AuditEntry(MR, Action.OPERATION, prescription_id, (plan.patient,), 200,
                               detail={"operation": "$sign", "kid": key.kid, "overrides": str(len(plan.overrides)),
                                       **({"group": group} if group else {})}), events=(signed,))
    return Signed(resource, version, provenance, receta_token, len(plan.overrides), plan.issues, group)


# ---------------------------------------------------------------- verify ---


@dataclass(frozen=True)
class Verification:
    valid: bool
    reason: str
    signed: dict[str, Any] | None
    provenance: dict[str, Any] | None


def verify(tenant: TenantId, current: Stored, *, repo: ClinicalRepository, ctx: RequestContext,
           key_for: Callable[[TenantId, str, str], KeyRecord | None] = signing_keys.by_kid) -> Verification:
    """Re-check a prescription's signature from what is stored (the pinned version, the JWS, the digest)."""
    provenance_id = current.attrs.get("provenance")
    if current.resource.get("status") == "draft" or not provenance_id:
        return Verification(False, "the prescription is not signed", None, None)
    stored = repo.get(ctx, "Provenance", str(provenance_id))
    if stored is None:
        return Verification(False, "the signature record (Provenance) is missing", None, None)
    provenance = stored.resource
    target = records.parse(provenance["target"][0]["reference"], where="Provenance.target", types=(MR,))
    signed = repo.get_version(ctx, MR, target.id, target.version or 0)
    if signed is None or target.id != current.resource["id"]:
        return Verification(False, "the signed version is missing", None, provenance)
    payload = signing.canonical(signed_content(signed.resource))

    try:
        jws = base64.b64decode(provenance["signature"][0]["data"]).decode()
        header, _ = signing.parse_detached_jws(jws)
    except (ValueError, KeyError, IndexError, DomainError):
        return Verification(False, "the stored signature is malformed", signed.resource, provenance)
    practitioner = str(signed.resource["requester"]["reference"]).removeprefix("Practitioner/")
    key = key_for(tenant, practitioner, str(header.get("kid", "")))
    if key is None:
        return Verification(False, "the prescriber's key is not registered", signed.resource, provenance)
    at = None
    if key.certificate_pem:
        try:
            at = signing.parse_signing_time(str(header.get("sigT", "")))
        except Invalid:
            return Verification(False, "the signature's signing time is malformed", signed.resource, provenance)
    result = signing.verify(jws, payload, public_key_pem=None if key.certificate_pem else key.public_key_pem,
                            certificate_pem=key.certificate_pem or None, at=at)
    if not result.valid:
        return Verification(False, f"signature: {result.reason}", signed.resource, provenance)
    if recorded_digest(provenance) != hashlib.sha256(payload).hexdigest():
        return Verification(False, "the document digest differs from the one recorded at signing", signed.resource,
                            provenance)
    return Verification(True, "signature valid: the prescription is exactly as signed", signed.resource, provenance)
