"""One replica process for the lease tests: a gateway with ``BudgetLeases`` and threads
that spend, hold, commit and release on shared tenants, each recording what it holds
(spent plus held) per tenant in a counters file the test reads, even after ``kill -9``.

``python -m tests.leases_replica '<json config>'``; prints the leases' stats at the end.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from billing_gateway import Gateway
from billing_gateway.leases import BudgetLeases

from .leases_support import Counters, created


def spend_for(config: dict[str, Any], leases: BudgetLeases, thread: int, view: memoryview) -> None:
    """Spends until nothing was granted for ``config["quiet_s"]`` (the budgets are used
    up) or for ``config["seconds"]`` at most, recording into ``view`` at its slots."""
    rng = random.Random(config["seed"] * 100 + thread)
    tenants = [t for t, _ in config["tenants"]]
    gw = leases.gateway
    loop = asyncio.new_event_loop()
    first = (config["index"] * config["threads"] + thread) * len(tenants)
    low, high = config["amounts"]
    deadline = last_ok = time.monotonic()
    deadline += config["seconds"]
    while (now := time.monotonic()) < deadline and now - last_ok < config["quiet_s"]:
        k = rng.randrange(len(tenants))
        tenant, slot, amount = tenants[k], first + k, rng.randint(low, high)
        op = rng.random()
        if op < 0.4:
            if gw.try_spend(tenant, amount):
                view[slot] += amount
                last_ok = now
        elif op < 0.6:
            if loop.run_until_complete(leases.spend(tenant, amount)).allowed:
                view[slot] += amount
                last_ok = now
        else:
            decision = gw.reserve(tenant, amount, ttl_s=30.0) if op < 0.8 else None
            if decision is None:
                decision = loop.run_until_complete(leases.reserve(tenant, amount, ttl_s=30.0))
            if decision.reservation_id is not None:
                view[slot] += amount
                last_ok = now
                if rng.random() < 0.7:
                    actual = rng.randint(0, amount)
                    gw.commit(decision.reservation_id, actual)
                    view[slot] -= amount - actual
                else:
                    gw.release(decision.reservation_id)
                    view[slot] -= amount
        time.sleep(config["pause_s"])
    loop.close()


def main(config: dict[str, Any]) -> None:
    gw = Gateway()
    for tenant, total in config["tenants"]:
        gw.apply(created(tenant, total))
    leases = BudgetLeases(
        gw,
        config["redis_url"],
        replica_id=config["replica_id"],
        mode=config["mode"],
        lease_ttl_s=config["ttl"],
        key_prefix=config["prefix"],
    )
    leases.start_in_thread()
    print("started", flush=True)
    with Counters.mapped(Path(config["counters"])) as view:
        threads = [
            threading.Thread(target=spend_for, args=(config, leases, i, view))
            for i in range(config["threads"])
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    asyncio.run(leases.stop())
    stats = asdict(leases.stats)
    stats["refusals"] = {reason.value: n for reason, n in leases.stats.refusals.items()}
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
