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


def run(repeats: int = 5) -> str:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'common'}{os.pathsep}{ROOT}",
           "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true"}
    # Warm the .pyc cache first, as a packaged Lambda would have it.
    _time(BASELINE, env)
    baseline = statistics.median(_time(BASELINE, env) for _ in range(repeats))
    rows = [f"| baseline (boto3 + Logger) | {baseline * 1000:.0f} ms | 1.00 | |"]
    for function in definitions.FUNCTIONS:
        code = f"import functions.{function.id}.handler"
        _time(code, env)
        value = statistics.median(_time(code, env) for _ in range(repeats))
        ratio = value / baseline
        verdict = "meets ≤ 2.0" if ratio <= 2.0 else "**misses ≤ 2.0**"
        rows.append(f"| {function.id} | {value * 1000:.0f} ms | {ratio:.2f} | {verdict} |")
    return "\n".join([
        f"### Cold init (fresh interpreter, import + module init, median of {repeats})",
        "",
        "| function | init | × baseline | target |",
        "|---|---|---|---|",
        *rows,
    ])
