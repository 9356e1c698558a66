"""The shipped interaction knowledge base: its content, ONC coverage, the ingredient index and malformed input."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest

from functions.prescriptions import checks, knowledge_base
from functions.prescriptions.checks import Medicine
from functions.prescriptions.formulary import Item, atc_by_inn, catalogue
from functions.prescriptions.knowledge_base import KNOWLEDGE, SEVERITIES, Rule, build

ONC_RULES = ("3", "4", "6", "8", "11", "16", "20", "21", "22", "23", "25", "27", "28", "30", "31")
# The ONC rules whose two sides both name an ingredient of the shipped catalogue (checked below; the
# others have a side the catalogue does not carry: atazanavir, febuxostat, irinotecan, ramelteon, tizanidine,
# tranylcypromine).
EXPRESSIBLE_ONC = {"3", "8", "16", "20", "21", "23", "25", "27", "31"}


def _document() -> dict[str, Any]:
    return dict(json.loads((KNOWLEDGE / "interactions.json").read_text(encoding="utf-8")))


def _kb() -> knowledge_base.KnowledgeBase:
    return knowledge_base.knowledge_base()


def _onc_rules() -> list[Rule]:
    return [rule for rule in _kb().rules if rule.onc]


def _items_with(ingredients: frozenset[str]) -> list[Item]:
    """Catalogue items holding one of ``ingredients``, single-ingredient items first, in key order."""
    found = [item for item in catalogue().values() if ingredients & set(item.inns)]
    return sorted(found, key=lambda i: (len(i.ingredients), i.id))


def _pair(rule: Rule) -> tuple[Item, Item] | None:
    """One catalogue item from each side of ``rule`` (different ingredients), or None."""
    for left in _items_with(rule.a.ingredients):
        for right in _items_with(rule.b.ingredients):
            if not set(left.inns) & set(right.inns):
                return left, right
    return None


# ---------------------------------------------------------------- shipped content ---


def test_knowledge_base_has_at_least_150_rules_with_unique_ids() -> None:
    ids = [rule.id for rule in _kb().rules]
    assert len(ids) >= 150
    assert len(ids) == len(set(ids))


def test_every_rule_has_effect_citation_and_a_severity_of_the_scale() -> None:
    for rule in _kb().rules:
        assert rule.effect.strip(), rule.id
        assert rule.citation.strip(), rule.id
        assert rule.severity in SEVERITIES, rule.id
        assert rule.a.ingredients and rule.b.ingredients, rule.id


def test_every_rule_cites_one_of_the_documented_sources() -> None:
    citations = [s["citation"] for s in _document()["sources"]]
    assert len(citations) == 2
    for rule in _kb().rules:
        assert any(c in rule.citation for c in citations), rule.id


def test_every_ingredient_is_a_lower_case_inn() -> None:
    for inn in _kb().ingredients():
        assert inn == inn.strip().lower(), inn


def test_every_onc_high_priority_rule_is_present() -> None:
    numbers = {n for rule in _onc_rules() for n in rule.onc}
    assert numbers == set(ONC_RULES)
    for rule in _onc_rules():
        assert "Phansalkar" in rule.citation, rule.id


def test_onc_rules_block_signing() -> None:
    for rule in _onc_rules():
        assert rule.severity in knowledge_base.BLOCKING, rule.id


def test_cross_reactivity_rules_are_cited_and_graded() -> None:
    cross = knowledge_base.cross_reactivity()
    assert len(cross) >= 10
    assert len({c.id for c in cross}) == len(cross)
    for rule in cross:
        assert rule.severity in SEVERITIES, rule.id
        assert rule.citation and rule.effect and rule.management, rule.id
    assert _kb().cross == cross


def test_combination_names_are_mapped_to_an_ingredient() -> None:
    document = {"sources": [{"id": "s", "citation": "c"}], "rules": [{
        "id": "r1", "severity": "major", "effect": "e", "source": "s",
        "a": {"ingredients": ["Lopinavir and Ritonavir"]}, "b": {"ingredients": ["rifampicin"]}}]}
    kb = build(document)
    assert kb.rules[0].a.ingredients == frozenset({"lopinavir"})
    assert [r.id for r in kb.interactions(("lopinavir", "ritonavir"), ("rifampicin",))] == ["r1"]


# ---------------------------------------------------------------- every expressible ONC pair fires ---


def test_onc_rules_expressible_with_the_catalogue_are_the_expected_ones() -> None:
    expressible = {n for rule in _onc_rules() if _pair(rule) is not None for n in rule.onc}
    assert expressible >= EXPRESSIBLE_ONC


def _onc_cases() -> Iterator[Any]:
    for rule in knowledge_base.knowledge_base().rules:
        if rule.onc:
            yield pytest.param(rule.id, id=rule.id)


@pytest.mark.parametrize("rule_id", list(_onc_cases()))
def test_every_expressible_onc_pair_raises_an_interaction_alert_citing_its_rule(rule_id: str) -> None:
    rule = next(r for r in _kb().rules if r.id == rule_id)
    pair = _pair(rule)
    if pair is None:
        assert not any(set(rule.a.ingredients) & set(i.inns) for i in catalogue().values()) or \
            not any(set(rule.b.ingredients) & set(i.inns) for i in catalogue().values())
        return
    left, right = pair
    for proposed, other in ((left, right), (right, left)):
        alerts = checks.check(Medicine(None, proposed, {}, proposed.label),
                              [Medicine("MedicationRequest/other", other, {}, other.label)], [],
                              kb=_kb(), atc_of=atc_by_inn())
        fired = [a for a in alerts if a.kind == "interaction" and a.rule == rule.id]
        assert len(fired) == 1, f"{rule.id}: {proposed.id} + {other.id} gave {[a.key for a in alerts]}"
        assert fired[0].severity == rule.severity
        assert "Phansalkar" in fired[0].citation
        assert fired[0].implicated == ("MedicationRequest/other",)


def test_every_item_pair_of_every_expressible_onc_rule_fires() -> None:
    """Not just one pair: every single-ingredient item of one side against one item of the other."""
    checked = 0
    for rule in _onc_rules():
        pair = _pair(rule)
        if pair is None:
            continue
        for left in _items_with(rule.a.ingredients):
            right = next((i for i in _items_with(rule.b.ingredients) if not set(i.inns) & set(left.inns)), None)
            if right is None:
                continue
            found = _kb().interactions(left.inns, right.inns)
            assert rule.id in {r.id for r in found}, (rule.id, left.id, right.id)
            checked += 1
    assert checked > 50


# ---------------------------------------------------------------- the ingredient index ---


def test_build_indexes_every_rule_under_each_ingredient_of_both_sides() -> None:
    kb = _kb()
    expected = {inn for rule in kb.rules for inn in rule.a.ingredients | rule.b.ingredients}
    assert set(kb.by_ingredient) == expected
    for rule in kb.rules:
        for side, members in (("a", rule.a.ingredients), ("b", rule.b.ingredients)):
            for inn in members:
                assert (rule, side) in kb.by_ingredient[inn], (rule.id, inn)


class _NoScan(tuple):  # type: ignore[type-arg]
    """A ``rules`` that fails the test if anything iterates over it."""

    def __iter__(self) -> Iterator[Any]:
        raise AssertionError("interactions() scanned every rule")


def test_interactions_look_up_the_index_instead_of_scanning_rules() -> None:
    kb = dataclasses.replace(_kb(), rules=_NoScan())
    assert {r.id for r in kb.interactions(("simvastatin",), ("clarithromycin",))} >= {"onc-25"}
    assert kb.interactions(("paracetamol",), ("amoxicillin",)) == []


def test_interactions_of_unknown_ingredients_are_empty() -> None:
    assert _kb().interactions(("not-a-drug",), ("simvastatin",)) == []
    assert _kb().interactions((), ("simvastatin",)) == []


def test_interactions_need_the_other_side_not_the_same_side() -> None:
    document = {"sources": [{"id": "s", "citation": "c"}], "rules": [{
        "id": "r1", "severity": "major", "effect": "e", "source": "s",
        "a": {"ingredients": ["alpha", "beta"]}, "b": {"ingredients": ["gamma"]}}]}
    kb = build(document)
    assert kb.interactions(("alpha",), ("beta",)) == []
    assert [r.id for r in kb.interactions(("alpha",), ("gamma",))] == ["r1"]
    assert [r.id for r in kb.interactions(("gamma",), ("beta",))] == ["r1"]


def test_a_rule_matching_two_ingredients_is_reported_once() -> None:
    document = {"sources": [{"id": "s", "citation": "c"}], "rules": [{
        "id": "r1", "severity": "major", "effect": "e", "source": "s",
        "a": {"ingredients": ["alpha", "beta"]}, "b": {"ingredients": ["gamma"]}}]}
    assert [r.id for r in build(document).interactions(("alpha", "beta"), ("gamma",))] == ["r1"]


# ---------------------------------------------------------------- malformed documents ---


def _minimal() -> dict[str, Any]:
    return {"title": "t", "version": "v", "sources": [{"id": "s", "citation": "Fuente 2020"}], "rules": [
        {"id": "r1", "severity": "major", "effect": "e", "source": "s",
         "a": {"ingredients": ["alpha"]}, "b": {"ingredients": ["beta"]}},
        {"id": "r2", "severity": "minor", "effect": "e", "source": "s",
         "a": {"ingredients": ["alpha"]}, "b": {"ingredients": ["gamma"]}},
    ]}


def test_minimal_document_builds() -> None:
    kb = build(_minimal())
    assert [r.id for r in kb.rules] == ["r1", "r2"]
    assert kb.rules[0].citation == "Fuente 2020"
    assert (kb.title, kb.version) == ("t", "v")


def _broken(change: Any) -> dict[str, Any]:
    document = copy.deepcopy(_minimal())
    change(document["rules"][0], document)
    return document


@pytest.mark.parametrize(("change", "message"), [
    (lambda r, d: r.update(severity="severe"), "severity"),
    (lambda r, d: r.pop("severity"), "severity"),
    (lambda r, d: r.update(a={"ingredients": []}), "both sides"),
    (lambda r, d: r.update(b={"label_es": "Nada"}), "both sides"),
    (lambda r, d: r.update(id="r2"), "unique"),
    (lambda r, d: r.pop("effect"), "effect"),
    (lambda r, d: r.pop("id"), "id"),
    (lambda r, d: (r.pop("source"), d.update(sources=[])), "source"),
])
def test_malformed_document_is_refused(change: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(_broken(change))


@pytest.mark.parametrize("change", [lambda r, d: r.pop("b"), lambda r, d: r.update(a=None)],
                         ids=["side-missing", "side-null"])
def test_rule_without_a_side_is_refused_as_malformed(change: Any) -> None:
    with pytest.raises(ValueError, match="both sides"):
        build(_broken(change))


def test_extra_sources_are_added_to_the_citation() -> None:
    document = _minimal()
    document["sources"].append({"id": "t", "citation": "Otra fuente 2012"})
    document["rules"][0]["sources"] = ["s", "t"]
    assert build(document).rules[0].citation == "Fuente 2020; Otra fuente 2012"
