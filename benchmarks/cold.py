"""Cold init: a fresh interpreter importing a function's handler module (median of N)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

from infra import definitions

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "import boto3\nfrom aws_lambda_powertools import Logger\nLogger(service='x')"


def _time(code: str, env: dict[str, str]) -> float:
    probe = ("import time\n_t = time.perf_counter()\n" + code +
             "\nprint(time.perf_counter() - _t)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run(repeats: int = 9) -> str:
    """Fresh-interpreter import times, interleaved (baseline, then each function, ``repeats`` rounds)
    so that the machine's drift touches every column alike; medians are compared."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'common'}{os.pathsep}{ROOT}",
           "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true"}
    probes = {"baseline (boto3 + Logger)": BASELINE,
              **{f.id: f"import functions.{f.id}.handler" for f in definitions.ALL_FUNCTIONS}}
    for code in probes.values():  # warm the .pyc cache first, as a packaged Lambda would have it
        _time(code, env)
    samples: dict[str, list[float]] = {name: [] for name in probes}
    for _ in range(repeats):
        for name, code in probes.items():
            samples[name].append(_time(code, env))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    baseline = medians.pop("baseline (boto3 + Logger)")
    rows = [f"| baseline (boto3 + Logger) | {baseline * 1000:.0f} ms | 1.00 | |"]
    for name, value in medians.items():
        ratio = value / baseline
        verdict = "meets ≤ 2.0" if ratio <= 2.0 else "**misses ≤ 2.0**"
        rows.append(f"| {name} | {value * 1000:.0f} ms | {ratio:.2f} | {verdict} |")
    return "\n".join([
        f"### Cold init (fresh interpreter, import + module init, median of {repeats} interleaved rounds)",
        "",
        "| function | init | × baseline | target |",
        "|---|---|---|---|",
        *rows,
    ])
