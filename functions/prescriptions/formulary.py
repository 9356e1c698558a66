"""The formulary: the shipped catalogue of national-catalogue medicines plus each tenant's local items.

The shipped catalogue (``knowledge/formulary.csv``, provenance in ``knowledge/SOURCES-formulary.md``)
is read once per process. Every item has its Cuadro Básico key (``GGG.GGG.GGGG.VV``, also its FHIR
id), generic name, form, strength per ingredient, the routes its form allows, ATC code, sale group
(LGS art. 226) and usual adult maximum daily dose where a cited source gives one; an empty field
means no source gave it, never a guess. A tenant adds local items (stored ``Medication`` resources)
and hides catalogue items it does not stock; :class:`Formulary` is one tenant's view of both.

Search is by accent-insensitive prefix of any word of the name (or of the whole name), by key and by
ATC code (a prefix selects a class, e.g. ``C09AA``), in name order, paged by offset.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from expediente.errors import Invalid

from . import units
from .units import UCUM, Quantity

KNOWLEDGE = Path(__file__).parent / "knowledge"
CNIS_SYSTEM = "urn:oid:2.16.840.1.113883.3.215.12.8"
ATC_SYSTEM = "http://www.whocc.no/atc"
SNOMED = "http://snomed.info/sct"
FORM_SYSTEM = "https://expediente.mx/fhir/CodeSystem/forma-farmaceutica"
EXT = "https://expediente.mx/fhir/StructureDefinition"
EXT_ROUTE = f"{EXT}/via-administracion"
EXT_SALE_GROUP = f"{EXT}/grupo-venta"
EXT_MAX_DOSE = f"{EXT}/dosis-maxima-diaria"
EXT_SOURCE = f"{EXT}/fuente"
EXT_INN = f"{EXT}/dci"
EXT_LOCAL = f"{EXT}/medicamento-local"
EXT_PACKAGE = f"{EXT}/envase"
EXT_PRESENTATION = f"{EXT}/unidad-presentacion"
SALE_GROUPS = ("I", "II", "III", "IV", "V", "VI")
KEY = re.compile(r"^\d{3}\.\d{3}\.\d{4}\.\d{2}$")
ATC = re.compile(r"^[A-Z](\d{2}([A-Z]([A-Z](\d{2})?)?)?)?$")
ATC_LEVEL5 = re.compile(r"^[A-Z]\d{2}[A-Z]{2}\d{2}$")


@dataclass(frozen=True)
class Ingredient:
    inn: str            # English INN as in the WHO ATC index, lower case: the identity the knowledge base uses
    name: str           # Spanish name
    strength: Quantity  # amount per ``Item.per``


@dataclass(frozen=True)
class Route:
    code: str
    display: str        # Spanish


@dataclass(frozen=True)
class Form:
    code: str
    name: str
    routes: tuple[str, ...]


@dataclass(frozen=True)
class Item:
    """One formulary medicine (a presentation: form and strength)."""

    id: str
    key: str | None
    generic_name: str
    description: str
    ingredients: tuple[Ingredient, ...]
    per: Quantity | None            # None: the strength is per presentation unit (one tablet, one ampoule)
    presentation_unit: str          # UCUM annotation of one countable unit: {tablet}, {ampule}, {bottle}…
    package: Quantity | None        # what one package holds
    form: str
    form_code: str
    routes: tuple[str, ...]
    atc: str | None
    sale_group: str | None
    max_daily_dose: Quantity | None
    sources: tuple[str, ...]
    local: bool = False
    search_words: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def inns(self) -> tuple[str, ...]:
        return tuple(i.inn for i in self.ingredients)

    @property
    def strength_text(self) -> str:
        per = "" if self.per is None else f"/{self.per}"
        return " + ".join(f"{i.strength}{per}" for i in self.ingredients)

    @property
    def label(self) -> str:
        """``Paracetamol, tableta 500 mg`` (generic name, form, strength)."""
        return f"{self.generic_name}, {self.form} {self.strength_text}"


def normalize(text: str) -> str:
    """Accent- and case-insensitive form of ``text`` (NFD, marks removed, casefolded, spaces collapsed)."""
    decomposed = unicodedata.normalize("NFD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def _words(item: Item) -> tuple[str, ...]:
    names = [item.generic_name, *(i.name for i in item.ingredients), *(i.inn for i in item.ingredients)]
    words: set[str] = set()
    for name in names:
        text = normalize(name)
        words.add(text)
        words.update(w for w in re.split(r"[\s/,+()-]+", text) if w)
    return tuple(sorted(words))


def _indexed(item: Item) -> Item:
    return replace(item, search_words=_words(item))


# ---------------------------------------------------------------- shipped catalogue ---


def split_sources(value: str) -> tuple[str, ...]:
    """Citations separated by ``;`` (a ``;`` inside parentheses belongs to its citation)."""
    parts: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(value):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == ";" and depth <= 0:
            parts.append(value[start:index])
            start = index + 1
    parts.append(value[start:])
    return tuple(p.strip() for p in parts if p.strip())


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split("|")] if value.strip() else []


@cache
def routes() -> dict[str, Route]:
    """The route vocabulary (SNOMED CT route codes), by code."""
    with (KNOWLEDGE / "routes.csv").open(encoding="utf-8", newline="") as handle:
        return {row["code"]: Route(row["code"], row["display_es"] or row["display_en"])
                for row in csv.DictReader(handle)}


@cache
def forms() -> dict[str, Form]:
    """Dose forms and the routes each allows, by code."""
    with (KNOWLEDGE / "forms.csv").open(encoding="utf-8", newline="") as handle:
        return {row["form_code"]: Form(row["form_code"], row["form_es"], tuple(_split(row["routes"])))
                for row in csv.DictReader(handle)}


def item_from_row(row: Mapping[str, str]) -> Item:
    """One catalogue row as an :class:`Item`; ValueError naming the problem for a malformed row."""
    key = row["key"].strip()
    if not KEY.match(key):
        raise ValueError(f"catalogue key {key!r} is not GGG.GGG.GGGG.VV")
    inns, names, strengths = _split(row["ingredients"]), _split(row["ingredients_es"]), _split(row["strengths"])
    if not inns or not (len(inns) == len(names) == len(strengths)):
        raise ValueError(f"{key}: ingredients, ingredients_es and strengths must have the same number of parts")
    ingredients = []
    for inn, name, strength in zip(inns, names, strengths, strict=True):
        amount = units.parse(strength)
        if amount is None or amount.value <= 0:
            raise ValueError(f"{key}: ingredient {inn} has no positive strength")
        ingredients.append(Ingredient(inn, name, amount))
    per_text = row["per"].strip()
    per = None if per_text in ("", "1") else units.parse(per_text)
    atc = row["atc"].strip() or None
    if atc is not None and not ATC_LEVEL5.match(atc):
        raise ValueError(f"{key}: ATC {atc!r} is not a level-5 code")
    group = row["sale_group"].strip() or None
    if group is not None and group not in SALE_GROUPS:
        raise ValueError(f"{key}: sale group {group!r} is not I-VI")
    item_routes = tuple(_split(row["routes"]))
    return Item(
        id=key, key=key, generic_name=row["generic_name"].strip(), description=row["description"].strip(),
        ingredients=tuple(ingredients), per=per, presentation_unit=row["presentation_unit"].strip(),
        package=units.parse(row["package"]), form=row["form"].strip(), form_code=row["form_code"].strip(),
        routes=item_routes, atc=atc, sale_group=group, max_daily_dose=units.parse(row["max_daily_dose"]),
        sources=split_sources(row["sources"]),
    )


@cache
def catalogue() -> dict[str, Item]:
    """The shipped catalogue by id (its key), read once per process."""
    with (KNOWLEDGE / "formulary.csv").open(encoding="utf-8", newline="") as handle:
        items = [_indexed(item_from_row(row)) for row in csv.DictReader(handle)]
    return {item.id: item for item in items}


# ---------------------------------------------------------------- a tenant's view ---


@dataclass(frozen=True)
class Formulary:
    """One tenant's formulary: the catalogue without its hidden items, plus its local items."""

    local: Mapping[str, Item]
    hidden: frozenset[str]

    def get(self, item_id: str, *, include_hidden: bool = False) -> Item | None:
        item = self.local.get(item_id) or catalogue().get(item_id)
        if item is None or (item.id in self.hidden and not include_hidden):
            return None
        return item

    def items(self, *, include_hidden: bool = False) -> Iterable[Item]:
        """Every item once: a clinic's version of a catalogue item replaces it."""
        shipped = (item for item in catalogue().values() if item.id not in self.local)
        for item in (*shipped, *self.local.values()):
            if include_hidden or item.id not in self.hidden:
                yield item

    def search(self, *, name: str | None = None, code: str | None = None, atc: str | None = None,
               include_hidden: bool = False) -> list[Item]:
        """Items matching every given criterion, sorted by generic name then label."""
        wanted = normalize(name) if name else None
        atc_prefix = atc.strip().upper() if atc else None
        if atc_prefix is not None and not ATC.match(atc_prefix):
            raise Invalid(f"atc {atc!r} is not an ATC code or prefix (e.g. C09AA02 or C09)", expression="atc")
        found = []
        for item in self.items(include_hidden=include_hidden):
            if code is not None and code not in (item.key, item.id):
                continue
            if atc_prefix is not None and not (item.atc or "").startswith(atc_prefix):
                continue
            if wanted and not any(w.startswith(wanted) for w in item.search_words):
                continue
            found.append(item)
        found.sort(key=lambda i: (normalize(i.generic_name), i.form, i.strength_text, i.id))
        return found


# ---------------------------------------------------------------- FHIR Medication ---


def _quantity(amount: Quantity) -> dict[str, Any]:
    return {"value": amount.value, "unit": amount.unit, "system": UCUM, "code": amount.unit}


def to_fhir(item: Item, *, hidden: bool = False) -> dict[str, Any]:
    """The item as an R4 ``Medication`` (status inactive when the tenant hides it)."""
    coding = []
    if item.key:
        coding.append({"system": CNIS_SYSTEM, "code": item.key, "display": item.description or item.label})
    if item.atc:
        coding.append({"system": ATC_SYSTEM, "code": item.atc})
    form = forms().get(item.form_code)
    denominator = _quantity(item.per) if item.per is not None else {"value": 1, "unit": item.presentation_unit,
                                                                      "system": UCUM, "code": item.presentation_unit}
    resource: dict[str, Any] = {
        "resourceType": "Medication",
        "id": item.id,
        "code": {**({"coding": coding} if coding else {}), "text": item.generic_name},
        "status": "inactive" if hidden else "active",
        "form": {"coding": [{"system": FORM_SYSTEM, "code": item.form_code,
                             "display": form.name if form else item.form}], "text": item.form},
        "ingredient": [{
            "itemCodeableConcept": {"text": ingredient.name,
                                    "extension": [{"url": EXT_INN, "valueString": ingredient.inn}]},
            "isActive": True,
            "strength": {"numerator": _quantity(ingredient.strength), "denominator": denominator},
        } for ingredient in item.ingredients],
    }
    extensions: list[dict[str, Any]] = []
    vocabulary = routes()
    for code in item.routes:
        route = vocabulary.get(code)
        extensions.append({"url": EXT_ROUTE, "valueCodeableConcept": {"coding": [
            {"system": SNOMED, "code": code, **({"display": route.display} if route else {})}]}})
    if item.per is not None:
        extensions.append({"url": EXT_PRESENTATION, "valueCode": item.presentation_unit})
    if item.package is not None:
        extensions.append({"url": EXT_PACKAGE, "valueQuantity": _quantity(item.package)})
    if item.sale_group:
        extensions.append({"url": EXT_SALE_GROUP, "valueCode": item.sale_group})
    if item.max_daily_dose is not None:
        extensions.append({"url": EXT_MAX_DOSE, "valueQuantity": _quantity(item.max_daily_dose)})
    extensions += [{"url": EXT_SOURCE, "valueString": source} for source in item.sources]
    if item.local:
        extensions.append({"url": EXT_LOCAL, "valueBoolean": True})
    if extensions:
        resource["extension"] = extensions
    return resource


def _ext(element: Mapping[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in element.get("extension") or [] if isinstance(e, dict) and e.get("url") == url]


def _fhir_quantity(value: Any, where: str, *, kinds: tuple[str, ...] | None = None) -> Quantity:
    if not isinstance(value, dict):
        raise Invalid(f"{where} is required (value and UCUM code)", expression=where)
    number, code = value.get("value"), value.get("code")
    if not isinstance(number, int | float) or isinstance(number, bool) or number <= 0:
        raise Invalid(f"{where}.value must be a positive number", expression=f"{where}.value")
    if value.get("system") not in (None, UCUM) or not isinstance(code, str) or not units.known_unit(code):
        raise Invalid(f"{where} needs a UCUM code the formulary knows (mg, g, ug, mL, [iU], or an annotation "
                      "such as {tablet})", expression=f"{where}.code")
    if kinds is not None and units.kind(code) not in kinds:
        raise Invalid(f"{where} must be in {' or '.join(kinds)} units, not {code}", expression=f"{where}.code")
    return Quantity(float(number), code)


def local_item(resource: Mapping[str, Any], item_id: str) -> Item:
    """A tenant's local item from a FHIR ``Medication``; 400 naming the field for anything missing.

    Required: ``code.text`` (generic name), ``form`` (a code of the form vocabulary), at least one
    ``ingredient`` with its INN (extension ``dci``), name and strength, and at least one source
    (extension ``fuente``). Optional: a Cuadro Básico key and ATC code in ``code.coding``, routes
    (default: those the form allows), the package, the sale group and a maximum daily dose.
    """
    code = resource.get("code") or {}
    name = str(code.get("text") or "").strip()
    if not name:
        raise Invalid("Medication.code.text (the generic name) is required", expression="Medication.code.text")
    key = atc = None
    for coding in code.get("coding") or []:
        system, value = coding.get("system"), str(coding.get("code") or "")
        if system == CNIS_SYSTEM:
            if not KEY.match(value):
                raise Invalid(f"Cuadro Básico key {value!r} must look like 010.000.0104.00",
                              expression="Medication.code.coding")
            key = value
        elif system == ATC_SYSTEM:
            if not ATC_LEVEL5.match(value):
                raise Invalid(f"ATC code {value!r} must be a level-5 code such as N02BE01",
                              expression="Medication.code.coding")
            atc = value
    form_coding = next((c for c in (resource.get("form") or {}).get("coding") or [] if c.get("system") == FORM_SYSTEM),
                       None)
    form = forms().get(str((form_coding or {}).get("code") or ""))
    if form is None:
        raise Invalid(f"Medication.form needs a code of {FORM_SYSTEM} ({', '.join(sorted(forms()))})",
                      expression="Medication.form")
    raw_ingredients = resource.get("ingredient") or []
    if not raw_ingredients:
        raise Invalid("Medication.ingredient is required (each with its INN, name and strength)",
                      expression="Medication.ingredient")
    ingredients: list[Ingredient] = []
    denominators: set[tuple[float, str]] = set()
    for n, raw in enumerate(raw_ingredients):
        where = f"Medication.ingredient[{n}]"
        concept = raw.get("itemCodeableConcept") or {}
        inn = next((str(e.get("valueString") or "").strip().lower() for e in _ext(concept, EXT_INN)), "")
        if not inn:
            raise Invalid(f"{where}.itemCodeableConcept needs the INN (extension {EXT_INN})",
                          expression=f"{where}.itemCodeableConcept")
        strength = raw.get("strength") or {}
        amount = _fhir_quantity(strength.get("numerator"), f"{where}.strength.numerator",
                                kinds=("mass", "iu", "amount", "equivalents", "volume"))
        per = _fhir_quantity(strength.get("denominator"), f"{where}.strength.denominator",
                             kinds=("count", "volume", "mass"))
        denominators.add((per.value, per.unit))
        ingredients.append(Ingredient(inn, str(concept.get("text") or inn), amount))
    if len(denominators) != 1:
        raise Invalid("Every ingredient's strength must be per the same amount", expression="Medication.ingredient")
    per_value, per_unit = denominators.pop()
    counted = units.kind(per_unit) == "count"
    if counted and per_value != 1:
        raise Invalid("A strength per presentation unit is per one unit (denominator 1 {tablet})",
                      expression="Medication.ingredient[0].strength.denominator")
    package = next((_fhir_quantity(e.get("valueQuantity"), "Medication.extension(envase)")
                    for e in _ext(resource, EXT_PACKAGE)), None)
    declared = next((str(e.get("valueCode") or "") for e in _ext(resource, EXT_PRESENTATION)), "")
    if declared and units.kind(declared) != "count":
        raise Invalid("unidad-presentacion is a UCUM annotation such as {bottle}",
                      expression="Medication.extension(unidad-presentacion)")
    presentation = per_unit if counted else declared or next(
        (p.unit for p in [package] if p is not None and units.kind(p.unit) == "count"), "{unit}")
    route_codes = tuple(str(((e.get("valueCodeableConcept") or {}).get("coding") or [{}])[0].get("code") or "")
                        for e in _ext(resource, EXT_ROUTE))
    unknown = [c for c in route_codes if c not in routes()]
    if unknown:
        raise Invalid(f"Unknown route code(s) {', '.join(unknown)}; use SNOMED CT route codes of the formulary",
                      expression="Medication.extension(via-administracion)")
    groups = [str(e.get("valueCode") or "") for e in _ext(resource, EXT_SALE_GROUP)]
    if any(g not in SALE_GROUPS for g in groups) or len(groups) > 1:
        raise Invalid("The sale group (grupo-venta) is one of I, II, III, IV, V, VI",
                      expression="Medication.extension(grupo-venta)")
    sources = tuple(str(e.get("valueString") or "").strip() for e in _ext(resource, EXT_SOURCE))
    if not sources or not all(sources):
        raise Invalid("Every formulary item cites its source (extension fuente: the catalogue edition or "
                      "monograph it comes from)", expression="Medication.extension(fuente)")
    max_dose = next((_fhir_quantity(e.get("valueQuantity"), "Medication.extension(dosis-maxima-diaria)",
                                    kinds=("mass", "iu", "amount", "equivalents"))
                     for e in _ext(resource, EXT_MAX_DOSE)), None)
    if max_dose is not None and len(ingredients) != 1:
        raise Invalid("A maximum daily dose is given for single-ingredient items only",
                      expression="Medication.extension(dosis-maxima-diaria)")
    return _indexed(Item(
        id=item_id, key=key, generic_name=name, description=str(resource.get("description") or ""),
        ingredients=tuple(ingredients), per=None if counted else Quantity(per_value, per_unit),
        presentation_unit=presentation, package=package, form=form.name, form_code=form.code,
        routes=route_codes or form.routes, atc=atc, sale_group=groups[0] if groups else None,
        max_daily_dose=max_dose, sources=sources, local=True,
    ))


@cache
def atc_by_inn() -> dict[str, str]:
    """The ATC code of each ingredient given by a single-ingredient catalogue item (for class checks
    of allergies recorded by substance)."""
    found: dict[str, str] = {}
    for item in sorted(catalogue().values(), key=lambda i: i.id):
        if item.atc and len(item.ingredients) == 1:
            found.setdefault(item.ingredients[0].inn, item.atc)
    return found
