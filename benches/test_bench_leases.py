"""Budgets shared by replicas (``make bench``): four processes spending on eight shared
tenants, in one run, (a) through Redis leases, strict and fast, (b) with a Redis Lua
check-and-debit per request (what a Redis-backed gateway does), (c) without sharing
(each table alone: the upper bound). Figures: spends per second (all four processes),
Redis round trips per 1,000 spends; printed as ratios to (b) and (c).

And the hot path itself: ``try_spend`` on a row bounded by a lease allowance against
the same call without leases, with the p99 of the per-call time of each round.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import uuid
from typing import Any

import pytest
import redis
from billing_gateway import Gateway

from tests.conftest import created, pin

PROCESSES = 4
SECONDS = 3.0
TENANTS = [f"shared-{i}" for i in range(8)]
TOTAL = 10**9  # units: a budget the run cannot exhaust, so every way runs at full speed
AMOUNT = 1_000


def fleet(how: str, redis_url: str | None) -> dict[str, float]:
    """Runs four processes spending ``how``; their summed figures."""
    if redis_url is None and how != "local":
        pytest.skip("no Redis on 127.0.0.1:6379")
    prefix = f"bgbench{uuid.uuid4().hex[:8]}"
    procs = []
    for index in range(PROCESSES):
        config = {
            "how": how, "redis_url": redis_url, "prefix": prefix, "tenants": TENANTS, "total": TOTAL,
            "amount": AMOUNT, "ttl": 2.0, "seconds": SECONDS, "warmup_s": 1.0, "index": index,
        }  # fmt: skip
        command = [sys.executable, "-m", "benches.leases_fleet", json.dumps(config)]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE))
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        results.append(json.loads(out))
    if redis_url is not None:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
    spends = sum(r["spends"] for r in results)
    per_s = sum(r["spends"] / r["seconds"] for r in results)
    trips = sum(r["round_trips"] for r in results)
    return {
        "spends_per_s": round(per_s),
        "round_trips_per_1000_spends": round(1000 * trips / max(spends, 1), 4),
    }


def record(benchmark: Any, how: str, redis_url: str | None) -> None:
    figures: dict[str, float] = {}

    def run() -> None:
        figures.update(fleet(how, redis_url))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(figures)


@pytest.mark.benchmark(group="shared_budget_4_processes")
def test_shared_budget_4_processes__baseline_local(benchmark: Any) -> None:
    record(benchmark, "local", None)


@pytest.mark.benchmark(group="shared_budget_4_processes")
def test_shared_budget_4_processes__baseline_redis_lua(benchmark: Any, redis_url: str | None) -> None:
    record(benchmark, "lua", redis_url)


@pytest.mark.benchmark(group="shared_budget_4_processes")
def test_shared_budget_4_processes__leases_strict(benchmark: Any, redis_url: str | None) -> None:
    record(benchmark, "strict", redis_url)


@pytest.mark.benchmark(group="shared_budget_4_processes")
def test_shared_budget_4_processes__leases_fast(benchmark: Any, redis_url: str | None) -> None:
    record(benchmark, "fast", redis_url)


# ---- the hot path with a lease allowance ------------------------------------------------


def table(leased: bool) -> Gateway:
    gw = pin(Gateway())
    gw.apply(created("sub_1", "cus_1", total=str(10**12)))
    if leased:
        gw._attach_leases()
        state = gw._lease_state("cus_1")
        assert state is not None
        assert gw._grant_allowance("cus_1", state[2], 10**17, False)
    return gw


def hot(benchmark: Any, gw: Gateway) -> None:
    assert benchmark.pedantic(gw.try_spend, args=("cus_1", 1), rounds=2000, iterations=100, warmup_rounds=50)
    rounds = sorted(benchmark.stats.stats.data)
    benchmark.extra_info["p99_ns"] = round(rounds[int(len(rounds) * 0.99)] * 1e9, 1)
    benchmark.extra_info["median_ns"] = round(statistics.median(rounds) * 1e9, 1)


@pytest.mark.benchmark(group="try_spend_leases")
def test_try_spend_leases__baseline_unleased(benchmark: Any) -> None:
    hot(benchmark, table(leased=False))


@pytest.mark.benchmark(group="try_spend_leases")
def test_try_spend_leases__leased(benchmark: Any) -> None:
    hot(benchmark, table(leased=True))
