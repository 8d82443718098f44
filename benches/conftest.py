"""Prints every benchmark as a ratio to the baselines of its group, measured in the same run.

Benchmarks are named ``test_<group>__<role>``; roles starting with ``baseline_`` are the
denominators. Extra figures (memory, throughput) come from ``benchmark.extra_info``.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups: dict[str, dict[str, Any]] = {}
    for bench in session.benchmarks:
        if not bench.stats or not bench.stats.data:
            continue  # it failed before measuring
        group, _, role = bench.name.removeprefix("test_").partition("__")
        groups.setdefault(group, {})[role or bench.name] = bench
    write = terminalreporter.write_line
    write("")
    write("billing_gateway benchmark ratios (median per call; same run, same machine)")
    for group, roles in groups.items():
        baselines = {r: b for r, b in roles.items() if r.startswith("baseline_")}
        write(f"  {group}")
        for role, bench in roles.items():
            median = bench.stats.median
            parts = [f"{median * 1e9:12.1f} ns  {role:<28}"]
            if not role.startswith("baseline_"):
                for base_role, base in baselines.items():
                    parts.append(f"{median / base.stats.median:8.3f}x {base_role.removeprefix('baseline_')}")
            write("    " + "  ".join(parts))
            for key, value in bench.extra_info.items():
                line = f"        {key}: {value}"
                for base_role, base in baselines.items():
                    theirs = base.extra_info.get(key)
                    if (
                        base is not bench
                        and isinstance(value, int | float)
                        and isinstance(theirs, int | float)
                        and theirs != 0
                    ):
                        line += f"  ({value / theirs:.3f}x {base_role.removeprefix('baseline_')})"
                write(line)


@pytest.fixture(scope="session")
def redis_url() -> str | None:
    """The local Redis for the Lua baseline, or None (that baseline is then skipped)."""
    url = os.environ.get("BILLING_GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1.0).close()
    except OSError:
        return None
    return url
