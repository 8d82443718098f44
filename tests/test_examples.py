"""The examples run as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_quickstart() -> None:
    out = run("quickstart.py")
    assert "duplicate" in out
    assert "insufficient_budget" in out
    assert "same table: True" in out


def test_live_sync() -> None:
    out = run("live_sync.py")
    assert "402 for cus_live: unknown_tenant" in out
    assert "consumer current=True" in out
    assert "insufficient_budget" in out
    assert "snapshot at cursor 1" in out
