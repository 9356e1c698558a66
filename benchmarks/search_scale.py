"""Search cost against table size: 1,000 vs 50,000 patients.

Patients are loaded with the repository's own item builders (resource, version and index items,
exactly what a create writes) through ``BatchWriteItem``, far faster than the API and the same
items. DynamoDB runs on two dynalite engines, one per size, and the same searches alternate
between them through the handler, so the machine's drift touches both sides alike. Reported per
search: items read (``ScannedCount`` of the index query plus patients fetched), end-to-end p50,
and p50 of the time spent outside the DynamoDB client.

moto is not used for this one: its ``Query`` walks every item of the table
(``moto/dynamodb/models/table.py``, ``Table.query`` iterates ``all_items()``), so its latency grows
with the table for reasons that are moto's (measured: 0.6 s at 1,000 patients, 22 s at 50,000).
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from benchmarks.harness import TENANT, AwsCalls, BatchLoader, call, two_engines, use_engine

SURNAMES = ["HERNANDEZ", "GARCIA", "MARTINEZ", "LOPEZ", "GONZALEZ", "RODRIGUEZ", "PEREZ", "SANCHEZ", "RAMIREZ",
            "CRUZ", "FLORES", "GOMEZ", "MORALES", "VAZQUEZ", "REYES", "JIMENEZ", "TORRES", "DIAZ", "GUTIERREZ",
            "RUIZ", "MENDOZA", "AGUILAR", "ORTIZ", "MORENO", "CASTILLO", "ROMERO", "ALVAREZ", "MENDEZ", "CHAVEZ",
            "RIVERA"]
GIVEN = ["JOSE", "MARIA", "JUAN", "GUADALUPE", "FRANCISCO", "ANTONIO", "JESUS", "ALEJANDRO", "MIGUEL", "PEDRO",
         "ANA", "LAURA", "CARMEN", "ROSA", "LUIS", "CARLOS", "JORGE", "PATRICIA", "ELENA", "SOFIA"]
# Each search matches more than a page at both sizes, so both runs do the same work per search
# (a full page) and any difference is the table's size, not a fuller page.
SEARCHES = [{"family": "garc"}, {"family": "lopez", "given": "ma"}, {"given": "guadalupe"},
            {"name": "rami"}, {"birthdate": "ge1960"}, {"family": "cruz", "gender": "female"}]


def _load(count: int, start: int, rng: random.Random) -> None:
    from expediente.context import TenantId
    from functions.patients import logic
    from functions.patients.model import Demographics
    from functions.patients.repository import repository

    repo = repository()
    tenant = TenantId(TENANT)
    loader = BatchLoader(repo.table)
    for n in range(start, start + count):
        demo = Demographics(curp=None, folio=f"B{n:08d}", first_surname=rng.choice(SURNAMES),
                            second_surname=rng.choice(SURNAMES), given=(rng.choice(GIVEN),),
                            birth_date=f"{rng.randint(1940, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                            gender=rng.choice(["male", "female"]), active=True, birth_state="00", nationality="NND")
        pid = f"bench{n:011d}"
        body = {"resourceType": "Patient", "name": [{"family": demo.first_surname, "given": list(demo.given)}],
                "birthDate": demo.birth_date, "gender": demo.gender}
        resource = logic.render(pid, demo, body, version=1, now="2026-11-25T00:00:00.000Z")
        ops = repo.store.write(tenant, pid, resource, version=1, last_updated="2026-11-25T00:00:00.000Z")
        ops += repo._index_changes(tenant, pid, None, demo)
        loader.add(ops)
    loader.flush()


def _search(calls: Any, query: dict[str, str]) -> tuple[float, float, int]:
    calls.reset()
    started = time.perf_counter()
    status, bundle = call("GET", "/fhir/Patient", query={**query, "_count": "20"})
    elapsed = time.perf_counter() - started
    assert status == 200, bundle
    return elapsed, elapsed - calls.seconds, calls.items_read


def run(*, small: int, large: int, searches: int) -> str:
    """Two dynalite engines, one holding ``small`` patients and one ``large``; the same searches
    alternate between them, so drift of this shared machine touches both sides alike."""
    rng = random.Random(2026)
    with two_engines("search") as engines:
        with use_engine(engines["small"]):
            _load(small, 0, rng)
        with use_engine(engines["large"]):
            _load(large, 0, rng)
        calls = AwsCalls()
        calls.attach(*engines.values())
        results: dict[str, list[tuple[float, float, int]]] = {"small": [], "large": []}
        for name in ("small", "large"):  # warm both paths
            with use_engine(engines[name]):
                _search(calls, SEARCHES[0])
        for i in range(searches):
            for name in ("small", "large"):
                with use_engine(engines[name]):
                    results[name].append(_search(calls, SEARCHES[i % len(SEARCHES)]))

    def summary(rows: list[tuple[float, float, int]]) -> tuple[float, float, float, int]:
        return (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows),
                statistics.mean(r[2] for r in rows), max(r[2] for r in rows))

    s_total, s_own, s_items, s_max = summary(results["small"])
    l_total, l_own, l_items, l_max = summary(results["large"])

    def pct(a: float, b: float) -> str:
        return f"{(b / a - 1) * 100:+.0f}%"

    return "\n".join([
        f"### Search cost against table size ({searches} searches of 6 kinds per size, alternating, `_count=20`)",
        "",
        "| patients in the table | items read / search (mean, max) | p50 outside DynamoDB | p50 end to end |",
        "|---|---|---|---|",
        f"| {small:,} | {s_items:.1f}, {s_max} | {s_own * 1000:.1f} ms | {s_total * 1000:.1f} ms |",
        f"| {large:,} | {l_items:.1f}, {l_max} | {l_own * 1000:.1f} ms | {l_total * 1000:.1f} ms |",
        f"| change | {pct(s_items, l_items)} | {pct(s_own, l_own)} | {pct(s_total, l_total)} |",
        "",
        "Target: items read and latency within 20%. DynamoDB runs on two dynalite engines (sorted "
        "in-memory LevelDB: a query reads only its key range, as in DynamoDB), one per size, and the "
        "searches alternate between them. Every search fills its page at both sizes, so both rows do "
        "the same work; items read are bounded by `_count` index items plus the patients fetched "
        "(at most 2 × `_count`). moto is not used here: its `Query` walks every item of the table.",
    ])
