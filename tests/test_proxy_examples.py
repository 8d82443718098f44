"""The proxy's examples run as documented: the whole-system demo and the ASGI app."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(name: str, timeout: float) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_asgi_app() -> None:
    out = run("asgi_app.py", 60)
    assert "402" in out and "401" in out
    assert "spent 0.041 of 0.05, held 0" in out


def test_whole_system_demo() -> None:
    out = run("demo.py", 120)
    assert "the proxy had the budget" in out
    assert "via cheap      policy default" in out  # the failover
    assert "policy low-budget-goes-cheap" in out
    assert "HTTP 402 insufficient_budget" in out
    assert "to the micro-unit" in out and "usage" in out
    assert "--keep-running" in out
