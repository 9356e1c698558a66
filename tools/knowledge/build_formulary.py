"""Build ``functions/prescriptions/knowledge/formulary.csv`` from the CNIS key list and curated tables.

Usage::

    python tools/knowledge/build_formulary.py <path to cnis_claves_medicamentos_cc2023-2028.csv> [--out PATH]

Inputs (all in ``tools/knowledge/formulary/``):

* ``substances.csv`` -- CNIS generic name (as written at the start of the CNIS description) -> Spanish
  generic name, English INN as written in the WHO ATC/DDD index (lower case), Spanish ingredient names
  and the WHO ATC level-5 code per administration class (``O`` oral, ``P`` parenteral, ``R`` rectal,
  ``OPH`` ophthalmic, ``TOP`` cutaneous, ``V`` vaginal, ``INH`` inhaled, ``N`` nasal, ``TD`` transdermal,
  ``SL`` sublingual).
* ``form_map.csv`` -- CNIS dose-form text -> form code (see ``forms.csv``), administration class and
  the UCUM annotation of one presentation unit.
* ``overrides.csv`` -- per-key corrections (``key,field,value,source``) for values the parser cannot
  derive, or must not derive, from the text (e.g. an ATC code that depends on the strength).
* ``exclusions.csv`` -- keys left out on purpose, with the reason.
* ``max_doses.csv`` -- maximum daily doses quoted from a monograph, per ingredient and route class.
* ``sale_groups.csv`` -- LGS art. 226 fraction per ingredient, with the legal text that supports it.
* ``../../../functions/prescriptions/knowledge/forms.csv`` -- routes allowed by each form code.

The output is deterministic: rows are sorted by key and every value comes from the inputs above.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import unicodedata
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
TABLES = HERE / "formulary"
REPO = HERE.parent.parent
KNOWLEDGE = REPO / "functions" / "prescriptions" / "knowledge"

COLUMNS = [
    "key",
    "description",
    "generic_name",
    "ingredients",
    "ingredients_es",
    "strengths",
    "per",
    "presentation_unit",
    "package",
    "form",
    "form_code",
    "routes",
    "atc",
    "sale_group",
    "max_daily_dose",
    "sources",
]

SRC_CNIS = "CNIS CC {edition} ({file}; SSA/IMSS compra consolidada, apéndice de demanda)"
SRC_ATC = "WHO ATC/DDD Index (fabkury/atcd 'WHO ATC-DDD 2026-04-25.csv' @934a3473)"
SRC_FORMS = "forms.csv (definitional form->route mapping)"

NUM = r"(\d{1,3}(?:[\s,]\d{3})+(?!\d)|\d+(?:\.\d+)?)"
UNIT_MAP = {
    "mg": "mg",
    "g": "g",
    "µg": "ug",
    "μg": "ug",
    "ug": "ug",
    "mcg": "ug",
    "microgramos": "ug",
    "ui": "[iU]",
    "u.i.": "[iU]",
    "u": "[iU]",
}
UNIT_RE = r"(mg|g|µg|μg|ug|mcg|microgramos|u\.i\.|ui|u)\b"
AMOUNT_RE = re.compile(NUM + r"\s*" + UNIT_RE)

PER_UNIT_WORDS = {
    "tableta": "{tablet}",
    "tabletas": "{tablet}",
    "comprimido": "{tablet}",
    "comprimidos": "{tablet}",
    "gragea": "{tablet}",
    "grageas": "{tablet}",
    "cápsula": "{capsule}",
    "cápsulas": "{capsule}",
    "capsula": "{capsule}",
    "capsulas": "{capsule}",
    "perla": "{capsule}",
    "perlas": "{capsule}",
    "parche": "{patch}",
    "parches": "{patch}",
    "supositorio": "{suppository}",
    "supositorios": "{suppository}",
    "óvulo": "{ovule}",
    "óvulos": "{ovule}",
    "sobre": "{sachet}",
    "sobres": "{sachet}",
    "ampolleta": "{ampule}",
    "ampolletas": "{ampule}",
    "frasco ámpula": "{vial}",
    "frascos ámpula": "{vial}",
    "frasco ampula": "{vial}",
    "frascos ampula": "{vial}",
    "jeringa": "{syringe}",
    "jeringas": "{syringe}",
    "cartucho": "{cartridge}",
    "cartuchos": "{cartridge}",
    "pluma": "{pen}",
    "plumas": "{pen}",
    "inhalación": "{actuation}",
    "dosis": "{actuation}",
}
CONTAINER_WORDS = [
    ("frascos ámpula", "{vial}"),
    ("frasco ámpula", "{vial}"),
    ("frascos ampula", "{vial}"),
    ("frasco ampula", "{vial}"),
    ("ampolletas", "{ampule}"),
    ("ampolleta", "{ampule}"),
    ("jeringas", "{syringe}"),
    ("jeringa", "{syringe}"),
    ("cartuchos", "{cartridge}"),
    ("cartucho", "{cartridge}"),
    ("plumas", "{pen}"),
    ("pluma", "{pen}"),
    ("tubo", "{tube}"),
    ("frasco", "{bottle}"),
    ("gotero", "{bottle}"),
]


def strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def norm_name(text: str) -> str:
    text = re.sub(r"[,.]", " ", strip_accents(text).upper())
    return re.sub(r"\s+", " ", text).strip()


def fold(text: str) -> str:
    """Lower case, no accents, single spaces: for matching only (never written out)."""
    return re.sub(r"\s+", " ", strip_accents(text).lower()).strip()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def fmt_number(raw: str) -> str:
    value = raw.replace(" ", "").replace(",", "")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value


def parse_amount(match: re.Match[str]) -> str:
    unit = UNIT_MAP[match.group(2).lower()]
    return f"{fmt_number(match.group(1))} {unit}"


def split_body(rest: str) -> tuple[str, str]:
    """Return (content clause, package clause) of the text after the form."""
    found = re.search(r"\b(envases?|caja)\s+con\b", rest, flags=re.IGNORECASE)
    if not found:
        return rest, ""
    return rest[: found.start()], rest[found.start() :]


def parse_per(content: str) -> tuple[str, str]:
    """Return (per, unit word annotation) from the 'Cada ... contiene' clause."""
    low = content.lower()
    liquid = re.search(r"cada\s+" + NUM + r"?\s*(ml|mililitros?|g|gramos?)\b", low)
    if liquid:
        amount = fmt_number(liquid.group(1)) if liquid.group(1) else "1"
        unit = "mL" if liquid.group(2).startswith("m") else "g"
        return f"{amount} {unit}", ""
    for word in sorted(PER_UNIT_WORDS, key=len, reverse=True):
        if re.search(r"cada\s+" + re.escape(word) + r"\b", low):
            return "1", PER_UNIT_WORDS[word]
    return "", ""


def parse_strengths(content: str, ingredients_es: list[str]) -> list[str]:
    low = content.lower()
    start = low.find("contiene")
    if start < 0:
        start = 0
    body = low[start:]
    if len(ingredients_es) == 1:
        equiv = re.search(r"equivalente\s+a:?\s*" + NUM + r"\s*" + UNIT_RE + r"\.?\s*(?:de\s+)?([a-záéíóúñ]*)", body)
        root = fold(ingredients_es[0]).split()[-1 if ingredients_es[0].startswith("ácido") else 0][:6]
        if equiv and (not equiv.group(3) or fold(equiv.group(3)).startswith(root[:5])):
            return [parse_amount(equiv)]
        first = AMOUNT_RE.search(body)
        return [parse_amount(first)] if first else [""]
    out: list[str] = []
    folded = fold(body)
    for name in ingredients_es:
        key = fold(name).split()[-1] if name.startswith("ácido") else fold(name).split()[0]
        pos = folded.find(key)
        if pos < 0:
            out.append("")
            continue
        found = AMOUNT_RE.search(folded, pos)
        out.append(parse_amount(found) if found else "")
    return out


def parse_package(package: str, per: str, unit: str) -> str:
    low = package.lower()
    liquid = re.search(r"con\s+(?:un\s+|una\s+)?(?:frasco|envase|gotero|tubo)?[^0-9]{0,40}?" + NUM + r"\s*ml\b", low)
    count = re.search(r"con\s+" + NUM + r"\s+([a-záéíóúñ]+(?:\s+ámpula|\s+ampula)?)", low)
    if per.endswith("mL") and liquid and not count:
        return f"{fmt_number(liquid.group(1))} mL"
    if per.endswith(" g"):
        mass = re.search(r"con\s+[^0-9]{0,40}?" + NUM + r"\s*g\b", low)
        return f"{fmt_number(mass.group(1))} g" if mass else ""
    doses = re.search(r"para\s+" + NUM + r"\s+dosis", low)
    if unit == "{actuation}" and doses:
        return f"{fmt_number(doses.group(1))} {{actuation}}"
    if count:
        word = count.group(2)
        annotation = PER_UNIT_WORDS.get(word)
        if annotation and (annotation == unit or unit == ""):
            return f"{fmt_number(count.group(1))} {annotation}"
        if annotation and per.endswith("mL") and annotation in {"{ampule}", "{vial}", "{syringe}"}:
            return f"{fmt_number(count.group(1))} {annotation}"
    if per.endswith("mL") and liquid:
        return f"{fmt_number(liquid.group(1))} mL"
    return ""


def container_unit(package: str, default: str) -> str:
    low = package.lower()
    for word, annotation in CONTAINER_WORDS:
        if word in low:
            return annotation
    return default


def atc_for(spec: str, atc_class: str) -> str:
    for item in spec.split(";"):
        if ":" in item:
            cls, code = item.split(":", 1)
            if cls.strip() == atc_class:
                return code.strip()
    return ""


def build(cnis_path: Path) -> list[dict[str, str]]:
    substances = {norm_name(r["cnis_name"]): r for r in read_csv(TABLES / "substances.csv")}
    forms = read_csv(TABLES / "form_map.csv")
    forms.sort(key=lambda r: len(r["cnis_form"]), reverse=True)
    form_routes = {r["form_code"]: r["routes"] for r in read_csv(KNOWLEDGE / "forms.csv")}
    overrides: dict[str, dict[str, tuple[str, str]]] = {}
    for row in read_csv(TABLES / "overrides.csv"):
        overrides.setdefault(row["key"], {})[row["field"]] = (row["value"], row["source"])
    excluded = {r["key"] for r in read_csv(TABLES / "exclusions.csv")}
    max_doses = {(r["ingredient"], r["route"]): r for r in read_csv(TABLES / "max_doses.csv")}
    sale_groups = {r["ingredient"]: r for r in read_csv(TABLES / "sale_groups.csv")}

    out: list[dict[str, str]] = []
    for row in read_csv(cnis_path):
        key = row["clave"].strip()
        if key in excluded or not key.startswith(("010.", "040.")):
            continue
        if row["descripcion_cc_2027_2028"].strip():
            text, edition = row["descripcion_cc_2027_2028"], "2027-2028"
        else:
            text, edition = row["descripcion"], row["fuente_descripcion"].replace("CC ", "")
        text = unicodedata.normalize("NFC", text.strip())
        sub = match_substance(text, substances)
        if sub is None:
            continue
        name_len = len(sub["_matched"])
        rest = text[name_len:].lstrip(" .:,")
        form_row = match_form(rest, forms)
        if form_row is None:
            continue
        rest = rest[len(form_row["cnis_form"]) :].lstrip(" .:,")
        content, package_text = split_body(rest)
        ingredients_es = sub["ingredients_es"].split("|")
        strengths = parse_strengths(content, ingredients_es)
        per, unit = parse_per(content)
        pres_unit = form_row["presentation_unit"]
        if per.endswith(("mL", "g")) and per != "1":
            pres_unit = container_unit(package_text + " " + content, pres_unit)
        elif unit:
            pres_unit = unit
        package = parse_package(package_text, per, pres_unit)
        record = {
            "key": key,
            "description": text,
            "generic_name": sub["generic_name"],
            "ingredients": sub["ingredients"],
            "ingredients_es": sub["ingredients_es"],
            "strengths": "|".join(strengths) if all(strengths) else "",
            "per": per,
            "presentation_unit": pres_unit,
            "package": package,
            "form": form_row["cnis_form"],
            "form_code": form_row["form_code"],
            "routes": form_routes.get(form_row["form_code"], ""),
            "atc": atc_for(sub["atc"], form_row["atc_class"]),
            "sale_group": "",
            "max_daily_dose": "",
            "sources": "",
        }
        sources = [SRC_CNIS.format(edition=edition, file="cnis_claves_medicamentos_cc2023-2028.csv")]
        for field, (value, source) in sorted(overrides.get(key, {}).items()):
            record[field] = value
            if source and source not in sources:
                sources.append(source)
        if record["atc"]:
            sources.append(SRC_ATC)
        if record["routes"]:
            sources.append(SRC_FORMS)
        ingredients = record["ingredients"].split("|")
        if len(ingredients) == 1:
            dose = max_doses.get((ingredients[0], form_row["atc_class"]))
            if dose:
                record["max_daily_dose"] = dose["max_daily_dose"]
                sources.append(dose["source"])
        groups = {sale_groups[i]["sale_group"] for i in ingredients if i in sale_groups}
        if len(groups) == 1:
            group = groups.pop()
            record["sale_group"] = group
            for ingredient in ingredients:
                if ingredient in sale_groups:
                    sources.append(sale_groups[ingredient]["source"])
        record["sources"] = "; ".join(dict.fromkeys(sources))
        if not record["strengths"] or not record["per"]:
            continue
        out.append(record)
    out.sort(key=lambda r: r["key"])
    return out


def match_substance(text: str, substances: dict[str, dict[str, str]]) -> dict[str, str] | None:
    normalized = norm_name(text)
    best: dict[str, str] | None = None
    for name, sub in substances.items():
        if (normalized == name or normalized.startswith(name + " ")) and (
            best is None or len(name) > len(best["_key"])
        ):
            best = {**sub, "_key": name}
    if best is None:
        return None
    # Find how many characters of the original text the matched name covers.
    words = best["_key"].split()
    pattern = r"\W*".join(re.escape(w) for w in words)
    found = re.match(r"\W*" + pattern, strip_accents(text).upper())
    if not found:
        return None
    best["_matched"] = text[: found.end()]
    return best


def match_form(rest: str, forms: Iterable[dict[str, str]]) -> dict[str, str] | None:
    folded = fold(rest)
    for row in forms:
        form = fold(row["cnis_form"])
        if not folded.startswith(form):
            continue
        tail = folded[len(form) :].lstrip()
        # The form must be followed by the end of the form segment, not by a qualifier
        # ("tableta bucal", "tableta vaginal"...), which would change the route.
        if tail == "" or tail[0] in ".:," or tail.startswith("cada "):
            return row
    return None


def write(rows: list[dict[str, str]], out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cnis_csv", type=Path, help="path to cnis_claves_medicamentos_cc2023-2028.csv")
    parser.add_argument("--out", type=Path, default=KNOWLEDGE / "formulary.csv")
    args = parser.parse_args(argv)
    rows = build(args.cnis_csv)
    write(rows, args.out)
    with_atc = sum(1 for r in rows if r["atc"])
    with_group = sum(1 for r in rows if r["sale_group"])
    with_dose = sum(1 for r in rows if r["max_daily_dose"])
    with_routes = sum(1 for r in rows if r["routes"])
    print(
        f"{len(rows)} rows; atc {with_atc}; sale_group {with_group}; max_daily_dose {with_dose}; routes {with_routes}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
