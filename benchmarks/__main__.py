"""``make bench``: the foundation's performance figures, as ratios measured in one run.

1. Cold init of each function (fresh interpreter: import + module init), median of 5,
   against a baseline that imports only boto3 and the Powertools Logger.
2. ``GET /fhir/Patient/{id}`` through the local stack (HTTP front door, JWT check, handler,
   audit write) against a bare DynamoDB ``GetItem`` on the same embedded endpoint: p50 ratio.
3. AWS calls per request, counted with botocore hooks: read, create, search.
4. Search cost with 1,000 and 50,000 patients loaded: items read per search and p50 latency.
5. Signing a note against a bare KMS ``Sign`` on the embedded endpoint: p50 ratio.
6. Listing a patient's notes with 10 and with 5,000 notes: items read and p50.
7. A clinic's worklist with 100 and with 20,000 orders in the tenant: items read and p50.
8. HL7 v2 ORU^R01 ingest: messages per second and the ratio to parse-only.
9. Critical-value detection: its share of the p50 of storing a laboratory result.
10. DICOM ingest: bytes read from S3 and memory for 1 MB, 100 MB and 1 GB instances; instances per second
    end to end against the ratio to header parsing alone.
11. Prescriptions: CPU per medication check (20 current prescriptions, whole knowledge base) and its growth
    with a 100-fold knowledge base; receta PDF rendering p50.
12. Load on the local stack: several threads and tenants, mixed reads and writes; requests/s, errors
    (throttling only), p50/p99, and every 201 read back afterwards (no lost write).

Figures are printed and written to ``benchmarks/README.md`` (between markers).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import calls, cold, imaging, load, local_http, notes, orders, prescriptions, results, search_scale

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "benchmarks" / "README.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--large", type=int, default=50_000, help="patients in the large search run")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke check")
    args = parser.parse_args()
    large = 5_000 if args.quick else args.large
    sections = []
    started = time.perf_counter()
    sections.append(cold.run(repeats=3 if args.quick else 9))
    sections.append(local_http.run(requests_count=50 if args.quick else 300))
    sections.append(calls.run())
    sections.append(search_scale.run(small=1_000, large=large, searches=12 if args.quick else 60))
    sections.append(notes.signing(notes=20 if args.quick else 100))
    sections.append(notes.listing(small=10, large=5_000, requests=12 if args.quick else 60))
    sections.append(orders.run(small=100, large=20_000, requests=12 if args.quick else 60))
    sections.append(results.hl7_ingest(messages=40 if args.quick else 400))
    sections.append(results.critical_overhead(results=20 if args.quick else 150))
    sections.append(imaging.bytes_and_memory())
    sections.append(imaging.throughput(instances=60 if args.quick else 300))
    sections.append(prescriptions.check_cost(rounds=500 if args.quick else 5000))
    sections.append(prescriptions.receta_rendering(renders=30 if args.quick else 300))
    sections.append(load.run(threads=4 if args.quick else 8, seconds=10 if args.quick else 45))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                            check=False).stdout.strip()
    header = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on commit `{commit or 'uncommitted'}`, "
              f"Python {sys.version.split()[0]}, {_cpus()} CPUs; whole run {time.perf_counter() - started:.0f} s.")
    text = "\n\n".join([header, *sections])
    sys.stdout.write(text + "\n")
    if not args.quick:
        _write(text)
    return 0


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


def _write(text: str) -> None:
    current = README.read_text(encoding="utf-8")
    before, _, rest = current.partition(START)
    _, _, after = rest.partition(END)
    README.write_text(f"{before}{START}\n{text}\n{END}{after}", encoding="utf-8")


def p50(values: list[float]) -> float:
    return statistics.median(values)


if __name__ == "__main__":
    raise SystemExit(main())
