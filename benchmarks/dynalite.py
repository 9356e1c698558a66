"""dynalite (npm) as a DynamoDB engine whose ``Query`` cost follows the sort-key range, as DynamoDB's does.

moto's ``Query`` walks every item of a table, so latency measured on moto grows with the table for
reasons that are moto's. dynalite keeps items in a sorted LevelDB store (in memory) and reads only
the key range a query names. It has no transactions, which the search path does not use.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "node_modules" / ".bin" / "dynalite"


def available() -> bool:
    return BINARY.exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running() -> Iterator[str]:
    """Start dynalite on a free 127.0.0.1 port; yields its endpoint URL and stops it afterwards."""
    port = _free_port()
    process = subprocess.Popen(
        [str(BINARY), "--host", "127.0.0.1", "--port", str(port), "--createTableMs", "0", "--deleteTableMs", "0",
         "--updateTableMs", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("dynalite did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
