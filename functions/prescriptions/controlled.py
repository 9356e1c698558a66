"""Sale-group rules for controlled medicines (Ley General de Salud art. 226, as the project reads it in
docs/decisions/0019-prescriptions.md).

- Group I (estupefacientes): the government's special prescription pad number is required, the
  treatment lasts at most 30 days, and it is dispensed once.
- Group II (psicotrópicos, receta retenida): at most 2 presentations (packages), valid 30 days
  from signing, dispensed once (the pharmacy keeps the receta).
- Group III: at most 3 dispensations (the first plus 2 repeats).
- Groups I-III are signed by physicians only.
Groups IV-VI follow what the prescriber indicates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from expediente.errors import Invalid

from .dosing import MR, Dosage
from .formulary import Item

SPECIAL_PAD_SYSTEM = "https://expediente.mx/fhir/sid/recetario-especial"
_PAD = re.compile(r"^[A-Za-z0-9-]{4,40}$")
CONTROLLED = frozenset({"I", "II", "III"})


@dataclass(frozen=True)
class GroupRule:
    group: str
    max_days: float | None = None
    max_packages: int | None = None
    validity_days: int | None = None
    dispensations: int | None = None   # total dispensations allowed (None: as the prescriber indicates)
    needs_pad: bool = False
    notice: str = ""


RULES: dict[str, GroupRule] = {
    "I": GroupRule("I", max_days=30, dispensations=1, needs_pad=True,
                   notice="Grupo I (estupefaciente): recetario especial con código de barras; se surte una vez"),
    "II": GroupRule("II", max_packages=2, validity_days=30, dispensations=1,
                    notice="Grupo II: receta retenida por la farmacia; vigencia 30 días; máximo 2 presentaciones"),
    "III": GroupRule("III", dispensations=3,
                     notice="Grupo III: puede surtirse hasta tres veces; la farmacia sella y registra cada surtido"),
}


def rule_for(item: Item) -> GroupRule | None:
    return RULES.get(item.sale_group or "")


def pad_number(resource: Mapping[str, Any]) -> str | None:
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") == SPECIAL_PAD_SYSTEM:
            return str(identifier.get("value") or "")
    return None


def check(resource: Mapping[str, Any], item: Item, dosage: Dosage) -> None:
    """400 naming the element when the prescription breaks its item's sale-group rules."""
    rule = rule_for(item)
    if rule is None:
        return
    if rule.needs_pad:
        pad = pad_number(resource)
        if not pad or not _PAD.match(pad):
            raise Invalid(f"{item.label} is a group I medicine: identifier with system {SPECIAL_PAD_SYSTEM} must "
                          "carry the special prescription pad's barcode number", expression=f"{MR}.identifier")
    if rule.max_days is not None and dosage.duration_days > rule.max_days:
        raise Invalid(f"Group {rule.group} treatment lasts at most {rule.max_days:.0f} days",
                      expression=f"{MR}.dosageInstruction[0].timing.repeat.boundsDuration")
    if rule.max_packages is not None:
        packages = dosage.packages(item)
        if packages is None:
            raise Invalid(f"Group {rule.group}: give dispenseRequest.quantity in {{package}} (packages)",
                          expression=f"{MR}.dispenseRequest.quantity")
        if packages > rule.max_packages:
            raise Invalid(f"Group {rule.group} allows at most {rule.max_packages} presentations (packages), "
                          f"not {packages}", expression=f"{MR}.dispenseRequest.quantity")
    if rule.dispensations is not None and dosage.repeats + 1 > rule.dispensations:
        raise Invalid(f"Group {rule.group} allows {rule.dispensations} dispensation(s) in all: "
                      f"numberOfRepeatsAllowed at most {rule.dispensations - 1}",
                      expression=f"{MR}.dispenseRequest.numberOfRepeatsAllowed")


def dispensations_allowed(item: Item, dosage: Dosage) -> int:
    rule = rule_for(item)
    allowed = dosage.repeats + 1
    return min(allowed, rule.dispensations) if rule and rule.dispensations else allowed
