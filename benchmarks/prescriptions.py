"""Prescription figures: what the medication checks cost, and how fast a receta renders.

1. Checks: interactions, allergies, duplication and maximum dose for a proposed prescription against a
   patient with 20 current prescriptions and 3 allergies, with the whole shipped knowledge base, in
   process: CPU time per check (``time.thread_time_ns``), p50 and p99 over many checks. Then the same
   with the formulary and the knowledge base grown 100-fold (synthetic items and rules on synthetic
   ingredients, indexed as the shipped ones are): the ratio of the two p99s shows whether the cost
   grows with their size (the p50 ratio; p99 is the tail of a 0.2 ms operation, timer and scheduler noise).
   Both knowledge bases are frozen out of the garbage collector's scans after loading (``gc.freeze``),
   as they are loaded once at a function's init.
2. The receta PDF of a signed prescription (one medicine, and five medicines), rendered in process:
   p50 and p99 wall time after the first render (which imports fpdf2 and segno).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _patient(kb: Any) -> tuple[Any, list[Any], list[Any]]:
    """A proposed prescription, 20 current ones (several interacting with it) and 3 allergies."""
    from functions.prescriptions import checks, formulary
    from functions.prescriptions.units import Quantity

    items = sorted(formulary.catalogue().values(), key=lambda i: i.id)
    singles = [i for i in items if len(i.ingredients) == 1 and i.routes]
    by_inn: dict[str, Any] = {}
    for item in singles:
        by_inn.setdefault(item.ingredients[0].inn, item)
    wanted = ["simvastatin", "warfarin", "amiodarone", "ibuprofen", "paracetamol", "metformin", "enalapril",
              "spironolactone", "clopidogrel", "fluoxetine", "tramadol", "haloperidol", "digoxin", "losartan",
              "amlodipine", "levothyroxine sodium", "carbamazepine", "acetylsalicylic acid", "atorvastatin",
              "allopurinol", "azathioprine", "sertraline", "ketoconazole", "furosemide"]
    chosen = [by_inn[n] for n in wanted if n in by_inn]
    chosen += [i for i in by_inn.values() if i not in chosen]

    def medicine(n: int, item: Any) -> Any:
        amount = item.ingredients[0].strength
        return checks.Medicine(f"MedicationRequest/m{n}", item, {item.ingredients[0].inn: Quantity(amount.value * 3,
                                                                                                  amount.unit)},
                               item.generic_name)

    current = [medicine(n, item) for n, item in enumerate(chosen[:20])]
    proposed_item = by_inn.get("clarithromycin") or chosen[20]
    proposed = checks.Medicine(None, proposed_item, {proposed_item.ingredients[0].inn: Quantity(1000, "mg")},
                               proposed_item.generic_name)
    allergies = [checks.Allergy("AllergyIntolerance/a1", "penicilinas", frozenset(), ("J01C",), "high"),
                 checks.Allergy("AllergyIntolerance/a2", "ibuprofeno", frozenset({"ibuprofen"}), (), "low"),
                 checks.Allergy("AllergyIntolerance/a3", "sulfas", frozenset({"sulfamethoxazole"}), (), "high")]
    return proposed, current, allergies


def _grown(factor: int) -> Any:
    """The knowledge base with ``factor`` times its rules, the extra ones on synthetic ingredients."""
    import json

    from functions.prescriptions import knowledge_base

    document = json.loads((knowledge_base.KNOWLEDGE / "interactions.json").read_text(encoding="utf-8"))
    rules = list(document["rules"])
    for copy in range(1, factor):
        for rule in document["rules"]:
            rules.append({**rule, "id": f"{rule['id']}-x{copy}",
                          "a": {**rule["a"], "ingredients": [f"{i}-x{copy}" for i in rule["a"]["ingredients"]]},
                          "b": {**rule["b"], "ingredients": [f"{i}-x{copy}" for i in rule["b"]["ingredients"]]}})
    return knowledge_base.build({**document, "rules": rules}, knowledge_base.cross_reactivity())


def _grown_atc(factor: int) -> dict[str, str]:
    from functions.prescriptions import formulary

    atc = dict(formulary.atc_by_inn())
    for copy in range(1, factor):
        atc.update({f"{inn}-x{copy}": code for inn, code in formulary.atc_by_inn().items()})
    return atc


def _time_checks(proposed: Any, current: list[Any], allergies: list[Any], kb: Any, atc: dict[str, str],
                 rounds: int) -> tuple[list[float], int]:
    import gc

    from functions.prescriptions import checks

    gc.collect()
    gc.freeze()
    alerts = checks.check(proposed, current, allergies, kb=kb, atc_of=atc)
    samples = []
    for _ in range(rounds):
        started = time.thread_time_ns()
        checks.check(proposed, current, allergies, kb=kb, atc_of=atc)
        samples.append((time.thread_time_ns() - started) / 1e6)
    return samples, len(alerts)


def check_cost(rounds: int = 3000, factor: int = 100) -> str:
    from functions.prescriptions import formulary, knowledge_base

    kb = knowledge_base.knowledge_base()
    proposed, current, allergies = _patient(kb)
    shipped, alerts = _time_checks(proposed, current, allergies, kb, formulary.atc_by_inn(), rounds)
    big_kb = _grown(factor)
    big, big_alerts = _time_checks(proposed, current, allergies, big_kb, _grown_atc(factor), rounds)
    p99, big_p99 = _percentile(shipped, 0.99), _percentile(big, 0.99)
    p50, big_p50 = statistics.median(shipped), statistics.median(big)
    ratio = big_p50 / p50 if p50 else float("nan")
    met = "met" if max(p99, big_p99) <= 2.0 and ratio < 1.25 else "NOT met"
    return "\n".join([
        "### prescriptions.checks",
        "",
        f"Interactions, allergies, duplication and maximum dose for one proposed prescription against 20 current "
        f"prescriptions and 3 allergies ({alerts} alerts), {rounds} checks, CPU time per check:",
        "",
        "| knowledge base | rules | indexed ingredients | p50 | p99 |",
        "|---|---:|---:|---:|---:|",
        f"| shipped | {len(kb.rules)} | {len(kb.by_ingredient)} | {statistics.median(shipped):.3f} ms | "
        f"{p99:.3f} ms |",
        f"| grown {factor}× (synthetic) | {len(big_kb.rules)} | {len(big_kb.by_ingredient)} | "
        f"{statistics.median(big):.3f} ms | {big_p99:.3f} ms |",
        "",
        f"p50 ratio grown/shipped: **{ratio:.2f}** (p99 ratio {big_p99 / p99:.2f}; same alerts: "
        f"{big_alerts == alerts}); formulary items: {len(formulary.catalogue())}. Targets: p99 ≤ 2 ms of CPU "
        f"and no growth with size (p50 ratio < 1.25) — **{met}**.",
    ])


def _receta(lines: int) -> Any:
    from functions.prescriptions.receta import Receta, RecetaLine

    line = RecetaLine(generic_name="Paracetamol", presentation="Tableta 500 mg", dose="1 tableta(s)",
                      route="Vía oral", frequency="cada 8 horas", duration="5 días",
                      quantity="2 envase(s) con 10 tableta(s)", instructions="Tomar con agua.",
                      key="010.000.0104.00")
    moment = datetime(2026, 11, 26, 17, 30, tzinfo=UTC)
    return Receta(
        folio="f3k2mzq7x4v6b8n1c5d9", issued=moment, timezone="America/Mexico_City",
        prescriber_name="Lucía Hernández Ortega", cedula="10000001", prescriber_title="Médica cirujana",
        institution="Red Clínica Demostración", clinic_name="Clínica Centro", clinic_address="Av. Juárez 100, Pachuca",
        clinic_clues="HGIMB000151", patient_name="Juan Pérez López", patient_birth_date="1980-01-01",
        patient_sex="Masculino", patient_record="F-000123",
        lines=tuple(replace(line, generic_name=f"Medicamento {n + 1}") for n in range(lines)),
        signature_digest="9f" * 32, signature_algorithm="ES256", signed_at=moment,
        verify_url="https://api.example.mx/receta/AbCdEfGhIjKlMnOpQrStUv")


def receta_rendering(renders: int = 200) -> str:
    from functions.prescriptions.receta import render_receta

    rows = []
    results: list[float] = []
    for lines in (1, 5):
        receta = _receta(lines)
        render_receta(receta)
        samples = []
        for _ in range(renders):
            started = time.perf_counter()
            render_receta(receta)
            samples.append((time.perf_counter() - started) * 1000)
        results.append(statistics.median(samples))
        rows.append(f"| {lines} | {statistics.median(samples):.1f} ms | {_percentile(samples, 0.99):.1f} ms | "
                    f"{len(render_receta(receta)) / 1024:.0f} KiB |")
    met = "met" if max(results) <= 100 else "NOT met"
    return "\n".join([
        "### prescriptions.receta",
        "",
        f"Receta PDF rendering in process (fpdf2, QR code by segno), {renders} renders each after a first one:",
        "",
        "| medicines | p50 | p99 | size |",
        "|---:|---:|---:|---:|",
        *rows,
        "",
        f"Target: p50 ≤ 100 ms — **{met}**.",
    ])
