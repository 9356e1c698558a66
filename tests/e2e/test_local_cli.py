"""``python -m local`` as a developer runs it: starts, answers, and stops cleanly on a signal."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 5


def start_local(stack_file: Path) -> subprocess.Popen[str]:
    # --no-seed: this test is about the process, not about the functions the seed goes through.
    process = subprocess.Popen(
        [sys.executable, "-m", "local", "--aws-port", "0", "--api-port", "0", "--no-seed",
         "--stack-file", str(stack_file)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not stack_file.exists():
        if process.poll() is not None:
            pytest.fail(f"python -m local exited with {process.returncode}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("python -m local did not write its stack file in time")
        time.sleep(0.1)
    return process


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_local_stack_stops_cleanly_on_signal(tmp_path, signum):
    stack_file = tmp_path / "stack.json"
    process = start_local(stack_file)
    try:
        document = json.loads(stack_file.read_text(encoding="utf-8"))
        answer = requests.get(f"{document['api_url']}/no/such/route", timeout=10)
        assert answer.status_code == 404
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "Expediente local stack is up" in stdout
    assert document["api_url"] in stdout
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{document['api_url']}/fhir/metadata", timeout=2)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{document['aws_endpoint']}/moto-api/", timeout=2)


def test_busy_port_is_reported_with_exit_status_1(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as occupant:
        busy_port = str(occupant.getsockname()[1])
        result = subprocess.run(
            [sys.executable, "-m", "local", "--aws-port", busy_port, "--api-port", "0", "--no-seed",
             "--stack-file", str(tmp_path / "stack.json")],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=START_TIMEOUT_S,
        )
    assert result.returncode == 1
    assert "cannot start" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "stack.json").exists()
