"""The receta: what a signed prescription prints, and what a pharmacy sees when it scans the QR code.

The printed receta carries what the law asks for (prescriber's name and cédula, institution and
clinic with address, date, patient, generic names, dose, route, frequency, duration, quantity, the
signature digest) and a QR code whose URL (``/receta/<token>``) answers, without an account,
whether the receta is authentic (its signature re-verified) and how many dispensations are left.
That public answer names the prescriber and the medicines but the patient by initials only.
"""

from __future__ import annotations

import html
from datetime import UTC, date, datetime
from typing import Any

from expediente import records, tenants
from expediente.clinical import ClinicalRepository
from expediente.context import RequestContext, service_context
from expediente.errors import NotFound
from expediente.identifiers import CEDULA_SYSTEM, FOLIO_SYSTEM
from expediente.provenance import recorded_digest
from expediente.store import Stored

from . import controlled, dosing, logic, signature
from .formulary import Formulary, routes
from .receta import Receta, RecetaLine, render_receta
from .repository import find_token, formulary, repository
from .units import format_number

TIMEZONE = "America/Mexico_City"


def _name(resource: dict[str, Any] | None) -> str:
    if not resource:
        return ""
    names = resource.get("name") or []
    if isinstance(names, str):
        return names
    first = names[0] if names else {}
    if first.get("text"):
        return str(first["text"])
    return " ".join([*(first.get("prefix") or []), *(first.get("given") or []), str(first.get("family") or "")]).strip()


def _identifier(resource: dict[str, Any] | None, system: str) -> str | None:
    for identifier in (resource or {}).get("identifier") or []:
        if identifier.get("system") == system:
            return str(identifier.get("value") or "")
    return None


def _address(organization: dict[str, Any] | None) -> str:
    for address in (organization or {}).get("address") or []:
        if address.get("text"):
            return str(address["text"])
        parts = [*(address.get("line") or []), address.get("city"), address.get("state"), address.get("postalCode")]
        return ", ".join(str(p) for p in parts if p)
    return ""


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _clues(resource: dict[str, Any]) -> str | None:
    return next((str(e.get("valueString")) for e in resource.get("extension") or [] if e.get("url") == logic.EXT_CLUES),
                None)


def _line(resource: dict[str, Any], view: Formulary) -> RecetaLine:
    item = logic.item_of(resource, view, include_hidden=True)
    dosage = dosing.parse(resource, item)
    route = routes().get(dosage.route)
    brand = next((str(e.get("valueString")) for e in resource.get("extension") or []
                  if e.get("url") == logic.EXT_BRAND), None)
    notes = [str(n.get("text")) for n in resource.get("note") or [] if n.get("text")]
    instruction = (resource.get("dosageInstruction") or [{}])[0]
    extra = [str(instruction.get("patientInstruction") or ""), *notes]
    return RecetaLine(
        generic_name=item.generic_name, presentation=f"{item.form.capitalize()} {item.strength_text}",
        dose=f"{format_number(dosage.dose.value)} {logic._unit_word(dosage.dose.unit)}",
        route=route.display if route else dosage.route, frequency=dosage.frequency_text
        + (" si es necesario" if dosage.as_needed else ""), duration=dosage.duration_text,
        quantity=logic.quantity_text(dosage.quantity, item), brand=brand,
        instructions="; ".join(e for e in extra if e) or None, key=item.key, sale_group=item.sale_group)


def receta_of(ctx: RequestContext, current: Stored, view: Formulary, *, verify_base: str) -> Receta:
    """Everything the printed receta shows, read from the signed prescription and the directory."""
    resource = current.resource
    signed = repository().get_version(ctx, logic.MR, resource["id"], int(current.attrs.get("signed_version", 0)))
    document = signed.resource if signed is not None else resource
    practitioner = records.find(ctx.tenant, "Practitioner",
                                str(document["requester"]["reference"]).removeprefix("Practitioner/"))
    patient = records.find(ctx.tenant, "Patient", records.subject_of(document) or "")
    tenant = tenants.get_tenant(ctx.tenant) or {}
    clues = _clues(document)
    clinic_id = records.find_unique(ctx.tenant, "Organization", clues) if clues else None
    clinic = records.find(ctx.tenant, "Organization", clinic_id) if clinic_id else None
    qualification = next((q.get("code", {}).get("text") for q in (practitioner or {}).get("qualification") or []
                          if q.get("code", {}).get("text")), None)
    provenance = repository().get(ctx, "Provenance", str(current.attrs.get("provenance", "")))
    digest = (recorded_digest(provenance.resource) if provenance else None) or ""
    signed_at = _instant(str(provenance.resource["signature"][0]["when"])) if provenance else _instant(
        resource["meta"]["lastUpdated"])
    item = logic.item_of(document, view, include_hidden=True)
    rule = controlled.rule_for(item)
    validity = ((document.get("dispenseRequest") or {}).get("validityPeriod") or {}).get("end")
    birth = (patient or {}).get("birthDate")
    return Receta(
        folio=resource["id"], issued=signed_at, timezone=TIMEZONE,
        prescriber_name=_name(practitioner) or "—", cedula=_identifier(practitioner, CEDULA_SYSTEM) or "—",
        prescriber_title=qualification, institution=str(tenant.get("name") or ctx.tenant),
        clinic_name=_name(clinic) or (clues or ""), clinic_address=_address(clinic), clinic_clues=clues,
        patient_name=_name(patient) or "—", patient_birth_date=str(birth) if birth else None,
        patient_sex={"male": "Masculino", "female": "Femenino"}.get(str((patient or {}).get("gender"))),
        patient_record=_identifier(patient, FOLIO_SYSTEM), lines=(_line(document, view),),
        signature_digest=str(digest), signature_algorithm="ES256", signed_at=signed_at,
        verify_url=f"{verify_base}/receta/{current.attrs['token']}",
        special_pad_barcode=controlled.pad_number(document) if rule and rule.needs_pad else None,
        valid_until=_instant(str(validity)).date() if validity and "T" in str(validity) else (
            date.fromisoformat(str(validity)) if validity else None),
        dispensations_allowed=logic.dispensations_allowed(current),
    )


def receta_pdf(ctx: RequestContext, current: Stored, view: Formulary, *, verify_base: str) -> bytes:
    return render_receta(receta_of(ctx, current, view, verify_base=verify_base))


# ---------------------------------------------------------------- public verification ---


def _initials(name: str) -> str:
    return "".join(f"{part[0].upper()}." for part in name.split() if part[:1].isalpha())


def public_verification(token: str) -> dict[str, Any]:
    """The pharmacy's answer for a receta token; 404 for a token that was never issued."""
    found = find_token(token)
    if found is None:
        raise NotFound("This receta does not exist")
    tenant, prescription_id = found
    ctx = service_context(tenant, "receta-verify")
    repo: ClinicalRepository = repository()
    current = repo.get(ctx, logic.MR, prescription_id)
    if current is None or current.attrs.get("token") != token:
        raise NotFound("This receta does not exist")
    result = signature.verify(tenant, current, repo=repo, ctx=ctx)
    document = result.signed or current.resource
    view = formulary(ctx)
    line = _line(document, view)
    practitioner = records.find(tenant, "Practitioner",
                                str(document["requester"]["reference"]).removeprefix("Practitioner/"))
    patient = records.find(tenant, "Patient", records.subject_of(document) or "")
    allowed, done = logic.dispensations_allowed(current), int(current.attrs.get("dispensed", 0))
    is_expired = logic.expired(current.resource, datetime.now(UTC))
    status = str(current.resource.get("status"))
    dispensable = result.valid and status == "active" and not is_expired and done < allowed
    logic.record_read(ctx, logic.MR, prescription_id, records.subject_of(document) or "", "receta-verify")
    return {
        "authentic": result.valid, "reason": result.reason, "status": status, "expired": is_expired,
        "dispensable": dispensable, "dispensations": {"allowed": allowed, "done": done,
                                                      "remaining": max(allowed - done, 0)},
        "issued": (result.provenance or {}).get("recorded"),
        "prescriber": {"name": _name(practitioner), "cedula": _identifier(practitioner, CEDULA_SYSTEM)},
        "patient": {"initials": _initials(_name(patient))},
        "medicines": [{"generic_name": line.generic_name, "presentation": line.presentation, "dose": line.dose,
                       "route": line.route, "frequency": line.frequency, "duration": line.duration,
                       "quantity": line.quantity, "key": line.key, "sale_group": line.sale_group}],
    }


def verification_html(answer: dict[str, Any]) -> str:
    """The same answer as a small page for a phone's browser."""
    ok = answer["authentic"] and answer["dispensable"]
    verdict = ("Receta auténtica y vigente" if ok else "Receta auténtica, pero NO surtible" if answer["authentic"]
               else "Receta NO auténtica")
    e = html.escape
    rows = "".join(f"<li><b>{e(m['generic_name'])}</b> — {e(m['presentation'])}; {e(m['dose'])}, {e(m['route'])}, "
                   f"{e(m['frequency'])}, {e(m['duration'])}; {e(m['quantity'])}</li>" for m in answer["medicines"])
    d = answer["dispensations"]
    return (f"<!doctype html><html lang='es'><meta charset='utf-8'><title>{e(verdict)}</title>"
            f"<h1>{e(verdict)}</h1><p>{e(answer['reason'])}</p>"
            f"<p>Estado: {e(answer['status'])}{' (vencida)' if answer['expired'] else ''}. Surtidos: {d['done']} de "
            f"{d['allowed']}.</p><p>Prescriptor: {e(answer['prescriber']['name'] or '')}, céd. prof. "
            f"{e(answer['prescriber']['cedula'] or '')}. Paciente: {e(answer['patient']['initials'])}</p>"
            f"<ul>{rows}</ul></html>")
