"""One process of the shared-budget benchmark: spends on shared tenants one way for a
measured window and prints what it did as JSON.

``python -m benches.leases_fleet '<json config>'``; ``how`` is ``local`` (the table
alone, no sharing), ``lua`` (a Redis Lua check-and-debit per request) or ``strict`` /
``fast`` (``BudgetLeases``). The window opens once spends succeed (leases have learned
and hold slices) and a warm-up has passed, so it measures the steady state.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from billing_gateway import Gateway
from billing_gateway.leases import BudgetLeases

from tests.leases_support import created

from .baselines import RedisLuaBudgets


def spend_for(seconds: float, spend: Callable[[str, int], bool], tenants: list[str], amount: int) -> int:
    spent, i, deadline = 0, 0, time.monotonic() + seconds
    while True:
        for _ in range(256):  # the clock is read once per 256 spends
            spent += spend(tenants[i & 7], amount)
            i += 1
        if time.monotonic() >= deadline:
            return spent


def main(config: dict[str, Any]) -> dict[str, Any]:
    how, tenants, amount = config["how"], config["tenants"], config["amount"]
    gw = Gateway()
    for tenant in tenants:
        gw.apply(created(tenant, config["total"]))
    leases: BudgetLeases | None = None
    lua: RedisLuaBudgets | None = None
    spend: Callable[[str, int], bool] = gw.try_spend
    if how in ("strict", "fast"):
        leases = BudgetLeases(
            gw, config["redis_url"], mode=how, lease_ttl_s=config["ttl"], key_prefix=config["prefix"]
        )
        leases.start_in_thread()
        waiting = set(tenants)
        while waiting:  # the fences' learning periods (all tenants at once)
            waiting = {t for t in waiting if not asyncio.run(leases.spend(t, amount)).allowed}
            time.sleep(0.05)
    elif how == "lua":
        lua = RedisLuaBudgets(config["redis_url"], prefix=config["prefix"] + ":")
        if config["index"] == 0:
            for tenant in tenants:
                lua.set_total(tenant, config["total"] * 1_000_000)
        time.sleep(0.5)
        spend = lua.try_spend
    spend_for(config["warmup_s"], spend, tenants, amount)
    trips = leases.stats.round_trips if leases else 0
    started = time.perf_counter()
    spent = spend_for(config["seconds"], spend, tenants, amount)
    elapsed = time.perf_counter() - started
    trips = (leases.stats.round_trips - trips) if leases else (spent if lua else 0)
    if leases is not None:
        asyncio.run(leases.stop())
    if lua is not None:
        lua.client.close()
    return {"spends": spent, "seconds": elapsed, "round_trips": trips}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
