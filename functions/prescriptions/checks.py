"""Medication checks: interactions, allergies, therapeutic duplication and maximum daily dose.

Pure and in-process: a proposed prescription is checked against the patient's current
prescriptions (active, and drafts not yet signed) and allergies, with the shipped knowledge base
(:mod:`knowledge_base`, indexed by ingredient) and the formulary's ATC codes and maximum doses.
The cost is a few look-ups per pair of ingredients: it does not depend on the size of the
formulary or of the knowledge base.

Severities (the project's scale, docs/decisions/0019-prescriptions.md): ``contraindicated`` and
``major`` block signing until the prescriber records an override reason; ``moderate`` and
``minor`` inform. Alert codes are HL7 v3 ActCode detected-issue codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .formulary import Item
from .knowledge_base import BLOCKING, SEVERITIES, KnowledgeBase
from .units import Quantity, format_number

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CODES = {
    "interaction": ("DRG", "Drug Interaction Alert"),
    "allergy": ("ALGY", "Allergy Alert"),
    "cross-allergy": ("RALG", "Related Allergy Alert"),
    "duplicate-generic": ("DUPTHPGEN", "duplicate generic alert"),
    "duplicate-class": ("DUPTHPCLS", "duplicate therapeutic class alert"),
    "high-dose": ("DOSEH", "High Dose Alert"),
}
FHIR_SEVERITY = {"contraindicated": "high", "major": "high", "moderate": "moderate", "minor": "low"}
ATC_CLASS_LENGTH = 5  # level 4 (chemical subgroup): C09AA, C10AA, N06AB, M01AE
FORMULARY_DOSE_CITATION = "Dosis máxima diaria habitual del formulario"


@dataclass(frozen=True)
class Medicine:
    """A prescription taking part in a check (the proposed one has no reference yet)."""

    ref: str | None
    item: Item
    daily: Mapping[str, Quantity]   # amount of each ingredient per day
    label: str


@dataclass(frozen=True)
class Allergy:
    ref: str
    label: str
    inns: frozenset[str]
    classes: tuple[str, ...]        # ATC codes or class prefixes the allergy names
    criticality: str                # low | high | unable-to-assess


@dataclass(frozen=True)
class Alert:
    kind: str
    severity: str
    rule: str
    detail: str
    management: str
    citation: str
    implicated: tuple[str, ...] = ()   # the other prescriptions or allergies involved

    @property
    def code(self) -> tuple[str, str]:
        return CODES[self.kind]

    @property
    def blocking(self) -> bool:
        return self.severity in BLOCKING

    @property
    def key(self) -> str:
        """What identifies the alert across re-checks of the same prescription."""
        return "|".join((self.kind, self.rule, *sorted(self.implicated)))


def _atc_classes(item: Item, atc_of: Mapping[str, str]) -> set[str]:
    codes = {item.atc} if item.atc else set()
    codes |= {atc_of[inn] for inn in item.inns if inn in atc_of}
    return codes


def interactions(proposed: Medicine, other: Medicine, kb: KnowledgeBase) -> list[Alert]:
    alerts = []
    for rule in kb.interactions(proposed.item.inns, other.item.inns):
        detail = f"{proposed.label} + {other.label}: {rule.effect}"
        if rule.mechanism:
            detail += f" ({rule.mechanism})"
        alerts.append(Alert("interaction", rule.severity, rule.id, detail, rule.management,
                            f"{rule.citation} — {rule.reference}" if rule.reference else rule.citation,
                            (other.ref,) if other.ref else ()))
    return alerts


def duplications(proposed: Medicine, other: Medicine, atc_of: Mapping[str, str]) -> list[Alert]:
    implicated = (other.ref,) if other.ref else ()
    shared = sorted(set(proposed.item.inns) & set(other.item.inns))
    if shared:
        return [Alert("duplicate-generic", "moderate", f"dup-{'+'.join(shared)}",
                      f"{proposed.label} repite {', '.join(shared)} de {other.label}",
                      "Confirmar que no se trata de una prescripción duplicada; suspender una de las dos si lo es.",
                      "Regla del sistema: mismo principio activo (DCI de la OMS)", implicated)]
    mine = {c[:ATC_CLASS_LENGTH] for c in _atc_classes(proposed.item, atc_of) if len(c) >= ATC_CLASS_LENGTH}
    theirs = {c[:ATC_CLASS_LENGTH] for c in _atc_classes(other.item, atc_of) if len(c) >= ATC_CLASS_LENGTH}
    common = sorted(mine & theirs)
    if common:
        return [Alert("duplicate-class", "moderate", f"dup-class-{common[0]}",
                      f"{proposed.label} y {other.label} pertenecen al mismo grupo terapéutico ATC {common[0]}",
                      "Duplicidad terapéutica: confirmar que ambos son necesarios.",
                      "Regla del sistema: mismo subgrupo químico del Sistema de Clasificación ATC de la OMS (nivel 4)",
                      implicated)]
    return []


def allergies(proposed: Medicine, recorded: Sequence[Allergy], kb: KnowledgeBase,
              atc_of: Mapping[str, str]) -> list[Alert]:
    alerts: list[Alert] = []
    classes = _atc_classes(proposed.item, atc_of)
    inns = set(proposed.item.inns)
    for allergy in recorded:
        severity = "contraindicated" if allergy.criticality == "high" else "major"
        direct = sorted(inns & allergy.inns) or sorted(p for p in allergy.classes
                                                       if any(c.startswith(p) for c in classes))
        if direct:
            alerts.append(Alert("allergy", severity, f"allergy-{'+'.join(direct)}",
                                f"{proposed.label}: el paciente tiene registrada alergia o intolerancia a "
                                f"{allergy.label}",
                                "No administrar salvo que se confirme que la alergia no aplica; registrar el motivo.",
                                "Regla del sistema: principio activo o clase ATC de la alergia registrada",
                                (allergy.ref,)))
            continue
        allergy_codes = set(allergy.classes) | {atc_of[i] for i in allergy.inns if i in atc_of}
        for rule in kb.cross:
            if any(a.startswith(rule.allergy_class) for a in allergy_codes) and any(
                    c.startswith(rule.related_class) for c in classes):
                alerts.append(Alert("cross-allergy", rule.severity, rule.id,
                                    f"{proposed.label}: alergia registrada a {allergy.label} ({rule.allergy_label}); "
                                    f"{rule.effect}", rule.management, rule.citation, (allergy.ref,)))
                break
    return alerts


def high_doses(proposed: Medicine, others: Sequence[Medicine]) -> list[Alert]:
    """Daily amount of each ingredient (this prescription plus the others with the same ingredient)
    above the item's usual adult maximum daily dose."""
    item = proposed.item
    if len(item.ingredients) != 1:
        return []
    inn = item.ingredients[0].inn
    # The proposed item's own maximum, else one a current single-ingredient item of the same ingredient gives.
    limit = item.max_daily_dose or next((m.item.max_daily_dose for m in others if m.item.max_daily_dose is not None
                                         and m.item.inns == (inn,)), None)
    if limit is None:
        return []
    total = 0.0
    parts: list[str] = []
    for medicine in (proposed, *others):
        amount = medicine.daily.get(inn)
        converted = amount.to(limit.unit) if amount is not None else None
        if converted is not None:
            total += converted.value
            parts.append(medicine.ref or "esta prescripción")
    if total <= limit.value * (1 + 1e-9):
        return []
    combined = " (sumando las prescripciones vigentes)" if len(parts) > 1 else ""
    return [Alert("high-dose", "major", f"max-dose-{inn}",
                  f"{proposed.label}: {format_number(total)} {limit.unit} de {item.ingredients[0].name} al día"
                  f"{combined} supera la dosis máxima diaria habitual del adulto ({limit})",
                  "Reducir la dosis o la frecuencia, o registrar el motivo clínico para superarla.",
                  f"{FORMULARY_DOSE_CITATION}: {'; '.join(item.sources)}",
                  tuple(p for p in parts if p != "esta prescripción"))]


def check(proposed: Medicine, current: Sequence[Medicine], recorded: Sequence[Allergy], *, kb: KnowledgeBase,
          atc_of: Mapping[str, str]) -> list[Alert]:
    """Every alert for ``proposed``, most severe first; ``current`` excludes ``proposed`` itself."""
    alerts: list[Alert] = []
    for other in current:
        alerts += interactions(proposed, other, kb)
        alerts += duplications(proposed, other, atc_of)
    alerts += allergies(proposed, recorded, kb, atc_of)
    alerts += high_doses(proposed, current)
    unique = {a.key: a for a in alerts}
    return sorted(unique.values(), key=lambda a: (SEVERITIES.index(a.severity), a.kind, a.rule, a.implicated))
