"""Signing a prescription (``$sign``) and verifying it, with the notes' signature scheme.

What is signed: the RFC 8785 canonical JSON of the active prescription without ``meta``; how:
a detached JWS (ES256) with the prescriber's KMS key, kept in a ``Provenance`` whose target is
the signed version (docs/decisions/0011-electronic-signature.md). Signing re-runs the checks;
each contraindicated or major alert needs the prescriber's override reason, which is stored in
the alert (``DetectedIssue.mitigation``) and audited. The signature also issues the receta's
verification token (the QR code's URL) and fixes how many dispensations the receta allows.
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
from expediente.errors import DomainError, Unprocessable
from expediente.index import Entry
from expediente.provenance import recorded_digest, signature_provenance
from expediente.signing_keys import KeyRecord
from expediente.store import Stored

from . import controlled, dosing, logic
from .formulary import Formulary
from .logic import ISSUE, MR, Outcome
from .repository import token_item

KmsSign = Callable[[signing.KmsKey, dict[str, str], bytes], str]


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


def _blocking_without_reason(issues: list[dict[str, Any]], reasons: Mapping[str, str],
                             general: str | None) -> list[dict[str, Any]]:
    return [i for i in issues if logic.severity_of(i) in ("contraindicated", "major") and not logic.overridden(i)
            and not (reasons.get(i["id"]) or general)]


def sign(ctx: RequestContext, prescription_id: str, *, if_match: int, repo: ClinicalRepository,
         formulary: Formulary, key: KeyRecord, kms_sign: KmsSign, reasons: Mapping[str, str],
         general_reason: str | None, new_id: Callable[[], str], token: Callable[[], str] = logic.new_token,
         clock: Callable[[], datetime] | None = None) -> Signed | Outcome:
    """Sign a draft: re-check, require override reasons for blocking alerts, store the active version,
    the alerts, the Provenance, the token and the audit records in one transaction.

    Returns :class:`Outcome` (nothing signed) when blocking alerts still lack a reason; the caller
    answers 409 with them.
    """
    current = repo.require(ctx, MR, prescription_id)
    logic.refuse_if_signed(current)
    check_version(current, if_match)
    logic._only_prescriber(ctx, current.resource, "signs")
    if key.kind != signing_keys.KMS:
        raise Unprocessable("Prescriptions are signed with the practitioner's server-held key; this practitioner "
                            "signs with a registered certificate, which prescriptions do not support yet")
    item = logic.item_of(current.resource, formulary, include_hidden=True)
    logic.signer_may_sign(ctx, item)
    dosage = dosing.parse(current.resource, item)
    controlled.check(current.resource, item, dosage)
    patient = records.subject_of(current.resource) or ""
    moment = clock() if clock else datetime.now(UTC)
    now = now_instant(lambda: moment)
    alerts = logic.run_checks(ctx, repo, formulary, patient, logic._medicine(None, item, dosage),
                              exclude=prescription_id)
    reconciled = logic.reconcile(ctx, repo, prescription_id, patient, alerts, logic._issue_ids(current.resource),
                                 now=now)
    unknown = sorted(set(reasons) - {i["id"] for i in reconciled.issues})
    if unknown:
        raise Unprocessable(f"override names alerts this prescription does not have: {', '.join(unknown)}",
                            expression="Parameters.override")
    missing = _blocking_without_reason(reconciled.issues, reasons, general_reason)
    if missing:
        return Outcome(current.resource, current.version, missing)
    writes = {w.id: w for w in reconciled.writes}
    overrides: list[tuple[dict[str, Any], str]] = []
    issues: list[dict[str, Any]] = []
    for issue in reconciled.issues:
        reason = reasons.get(issue["id"]) or general_reason
        if logic.severity_of(issue) in ("contraindicated", "major") and not logic.overridden(issue) and reason:
            pending = writes.get(issue["id"])
            base_version = pending.version if pending else int(issue["meta"]["versionId"]) + 1
            previous_entry = pending.previous if pending else logic.issue_entry(issue)
            mitigated = stamp({**issue, "status": "final", "mitigation": [{
                "action": {"coding": [{"system": logic.ALERT_ACTION_SYSTEM, "code": "override",
                                       "display": "Alerta revisada; el prescriptor decide continuar"}],
                           "text": reason.strip()[:1000]},
                "date": now, "author": {"reference": f"Practitioner/{ctx.practitioner_id}"}}]},
                issue["id"], base_version, now)
            writes[issue["id"]] = Write(ISSUE, mitigated, base_version, logic.issue_entry(mitigated),
                                        previous=previous_entry)
            overrides.append((mitigated, logic.severity_of(issue)))
            issues.append(mitigated)
        else:
            issues.append(issue)
    rule = controlled.rule_for(item)
    document = dict(current.resource)
    document["status"] = "active"
    if reconciled.references:
        document["detectedIssue"] = [{"reference": f"{ISSUE}/{i['id']}", "display": ref["display"]}
                                     for i, ref in zip(issues, reconciled.references, strict=True)]
    else:
        document.pop("detectedIssue", None)
    allowed = controlled.dispensations_allowed(item, dosage)
    dispense_request = dict(document.get("dispenseRequest") or {})
    if rule is not None and rule.validity_days:
        dispense_request["validityPeriod"] = {
            "start": now, "end": now_instant(lambda: moment + timedelta(days=rule.validity_days or 0))}
    dispense_request["numberOfRepeatsAllowed"] = allowed - 1
    document["dispenseRequest"] = dispense_request
    document["extension"] = [e for e in document.get("extension") or [] if e.get("url") != logic.EXT_DISPENSATIONS]
    document["extension"].append({"url": logic.EXT_DISPENSATIONS, "valueInteger": allowed})
    version = current.version + 1
    final = signed_content(document)
    header = signing.protected_header(alg=signing.ES256, kid=key.kid, signing_time=signing.format_signing_time(moment))
    payload = signing.canonical(final)
    jws = kms_sign(signing.KmsKey(key_id=key.key_id, kid=key.kid, public_key_pem=key.public_key_pem), header, payload)
    resource = stamp(final, prescription_id, version, now)
    provenance_id = new_id()
    provenance = stamp(signature_provenance(
        target=f"{MR}/{prescription_id}/_history/{version}", author=dict(resource["requester"]),
        when=header["sigT"], jws=jws, payload_digest=hashlib.sha256(payload).hexdigest(), kid=key.kid,
        recorded=now), provenance_id, 1, now)
    receta_token = token()
    attrs = {**current.attrs, "provenance": provenance_id, "token": receta_token, "allowed": allowed,
             "dispensed": 0, "signed_version": version}
    extra: list[dict[str, Any]] = [token_item(receta_token, ctx.tenant, prescription_id)]
    for mitigated, severity in overrides:
        extra += audit.audit_puts(ctx, AuditEntry(ISSUE, Action.OPERATION, mitigated["id"], (patient,), 200,
                                                  detail={"operation": "$override", "prescription": prescription_id,
                                                          "severity": severity}))
    repo.save(ctx, [Write(MR, resource, version, logic.index_entry(resource),
                          previous=logic.index_entry(current.resource), attrs=attrs),
                    Write("Provenance", provenance, 1, Entry(sort=now, facets={}), attrs={"patient": patient}),
                    *writes.values()], now=now, extra=extra,
              entry=AuditEntry(MR, Action.OPERATION, prescription_id, (patient,), 200,
                               detail={"operation": "$sign", "kid": key.kid, "overrides": str(len(overrides)),
                                       **({"group": item.sale_group} if item.sale_group else {})}))
    return Signed(resource, version, provenance, receta_token, len(overrides), issues, item.sale_group)


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
    result = signing.verify(jws, payload, public_key_pem=key.public_key_pem, at=None)
    if not result.valid:
        return Verification(False, f"signature: {result.reason}", signed.resource, provenance)
    if recorded_digest(provenance) != hashlib.sha256(payload).hexdigest():
        return Verification(False, "the document digest differs from the one recorded at signing", signed.resource,
                            provenance)
    return Verification(True, "signature valid: the prescription is exactly as signed", signed.resource, provenance)
