"""The shipped drug-interaction and cross-reactivity knowledge, indexed by ingredient.

``knowledge/interactions.json`` holds pair and class rules (each side a list of ingredients by
their WHO English INN) with severity, effect, management and citation; its provenance is in
``knowledge/SOURCES-interactions.md``. ``knowledge/cross_reactivity.csv`` holds the allergy
cross-reactivity rules between ATC classes, each with its citation.

Rules are indexed once per process by ingredient, so checking a prescription costs a few
dictionary look-ups per ingredient pair: it does not grow with the size of the formulary or of
the knowledge base (no pairwise scan).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

KNOWLEDGE = Path(__file__).parent / "knowledge"
SEVERITIES = ("contraindicated", "major", "moderate", "minor")
# The WHO index names some substances only inside a combination; the formulary lists the combination's
# ingredients one by one (lopinavir/ritonavir is ``lopinavir`` and ``ritonavir``; imipenem/cilastatin is
# ``imipenem`` and ``cilastatin``).
ALIASES = {"lopinavir and ritonavir": "lopinavir", "valsartan and sacubitril": "sacubitril",
           "imipenem and cilastatin": "imipenem"}
BLOCKING = frozenset({"contraindicated", "major"})


@dataclass(frozen=True)
class Side:
    label: str
    ingredients: frozenset[str]
    klass: str | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    a: Side
    b: Side
    severity: str
    effect: str
    management: str
    citation: str
    reference: str
    onc: tuple[str, ...] = ()
    mechanism: str = ""

    def other(self, side: str) -> Side:
        return self.b if side == "a" else self.a


@dataclass(frozen=True)
class CrossReactivity:
    """Allergy to ``allergy_class`` (ATC prefix) warns about ``related_class`` (ATC prefix)."""

    id: str
    allergy_class: str
    allergy_label: str
    related_class: str
    related_label: str
    severity: str
    effect: str
    management: str
    citation: str


@dataclass(frozen=True)
class KnowledgeBase:
    rules: tuple[Rule, ...]
    by_ingredient: dict[str, tuple[tuple[Rule, str], ...]]
    sources: tuple[dict[str, str], ...]
    cross: tuple[CrossReactivity, ...]
    title: str
    version: str

    def interactions(self, left: tuple[str, ...], right: tuple[str, ...]) -> list[Rule]:
        """The rules that apply between a medicine with ingredients ``left`` and one with ``right``."""
        found: dict[str, Rule] = {}
        others = set(right)
        for inn in left:
            for rule, side in self.by_ingredient.get(inn, ()):
                if rule.id not in found and not others.isdisjoint(rule.other(side).ingredients):
                    found[rule.id] = rule
        return list(found.values())

    def ingredients(self) -> frozenset[str]:
        return frozenset(self.by_ingredient)


def _side(raw: dict[str, Any]) -> Side:
    names = (str(i).strip().lower() for i in raw.get("ingredients") or [])
    return Side(str(raw.get("label_es") or raw.get("label") or ""), frozenset(ALIASES.get(n, n) for n in names),
                raw.get("class"))


def rule_from(raw: dict[str, Any], citations: dict[str, str]) -> Rule:
    """One rule of ``interactions.json``; ValueError naming the rule when it is malformed."""
    rule_id = str(raw.get("id") or "")
    severity = str(raw.get("severity") or "")
    if severity not in SEVERITIES:
        raise ValueError(f"rule {rule_id}: severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    if not isinstance(raw.get("a"), dict) or not isinstance(raw.get("b"), dict):
        raise ValueError(f"rule {rule_id}: both sides (a and b) are required")
    a, b = _side(raw["a"]), _side(raw["b"])
    if not a.ingredients or not b.ingredients:
        raise ValueError(f"rule {rule_id}: both sides need ingredients")
    source = str(raw.get("source") or "")
    citation = citations.get(source, source)
    for extra in raw.get("sources") or []:
        if extra in citations and citations[extra] not in citation:
            citation = f"{citation}; {citations[extra]}"
    if not rule_id or not citation or not raw.get("effect"):
        raise ValueError(f"rule {rule_id or '?'}: id, effect and a cited source are required")
    return Rule(rule_id, a, b, severity, str(raw["effect"]), str(raw.get("management") or ""), citation,
                str(raw.get("reference") or ""), tuple(str(n) for n in raw.get("onc") or ()),
                str(raw.get("mechanism") or ""))


def build(document: dict[str, Any], cross: tuple[CrossReactivity, ...] = ()) -> KnowledgeBase:
    """Index a knowledge-base document by ingredient."""
    sources = tuple(document.get("sources") or ())
    citations = {str(s.get("id")): str(s.get("citation") or "") for s in sources}
    rules = tuple(rule_from(raw, citations) for raw in document.get("rules") or [])
    ids = [r.id for r in rules]
    if len(ids) != len(set(ids)):
        raise ValueError("rule ids must be unique")
    index: dict[str, list[tuple[Rule, str]]] = defaultdict(list)
    for rule in rules:
        for side, members in (("a", rule.a.ingredients), ("b", rule.b.ingredients)):
            for inn in members:
                index[inn].append((rule, side))
    return KnowledgeBase(rules, {k: tuple(v) for k, v in index.items()}, sources, cross,
                         str(document.get("title") or ""), str(document.get("version") or ""))


@cache
def cross_reactivity() -> tuple[CrossReactivity, ...]:
    with (KNOWLEDGE / "cross_reactivity.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    found = []
    for row in rows:
        if row["severity"] not in SEVERITIES:
            raise ValueError(f"cross-reactivity {row['id']}: severity {row['severity']!r}")
        found.append(CrossReactivity(row["id"], row["allergy_class"], row["allergy_label"], row["related_class"],
                                     row["related_label"], row["severity"], row["effect"], row["management"],
                                     row["citation"]))
    return tuple(found)


@cache
def knowledge_base() -> KnowledgeBase:
    """The shipped knowledge base, read and indexed once per process."""
    document = json.loads((KNOWLEDGE / "interactions.json").read_text(encoding="utf-8"))
    return build(document, cross_reactivity())
