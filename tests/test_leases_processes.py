"""Replicas as real processes sharing budgets through Redis leases: four processes by
three threads spending, holding, committing and releasing on three shared tenants, in
strict and fast mode, through ``kill -9`` of replicas and a Redis killed and restarted
with and without its data. What every thread held is read from a shared counters file
(``tests.leases_replica``), so a killed replica's spends count too."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from billing_gateway.leases.script import budget_key

from .leases_support import UNIT, Counters, drop_prefix, redis_server, unique_prefix, wait_until

TTL = 1.0
QUIET_S = 3.0
PROCESSES = 4
THREADS = 3
TENANTS = [("t-a", 60), ("t-b", 90), ("t-c", 120)]
PERIOD_START = 1_764_324_000_000_000  # 2025-11-28T10:00:00Z, the events' period


@dataclass
class Fleet:
    """``PROCESSES`` replica processes spending until the budgets are used up."""

    tmp: Path
    redis_url: str
    mode: str = "strict"
    seconds: float = 40.0
    """At most; each replica stops once nothing was granted to it for ``QUIET_S``."""
    prefix: str = field(default_factory=unique_prefix)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.counters = Counters(self.tmp / "counters", PROCESSES * THREADS * len(TENANTS))

    def start(self) -> Fleet:
        for index in range(PROCESSES):
            config = {
                "redis_url": self.redis_url, "prefix": self.prefix, "mode": self.mode, "ttl": TTL,
                "replica_id": f"r{index}", "counters": str(self.counters.path), "index": index,
                "threads": THREADS, "tenants": [(t, total) for t, total in TENANTS],
                "seconds": self.seconds, "quiet_s": QUIET_S, "seed": index,
                "amounts": [1_000, 50_000], "pause_s": 0.0005,
            }  # fmt: skip
            with open(self.tmp / f"r{index}.log", "wb") as log:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "tests.leases_replica", json.dumps(config)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        return self

    def held(self, tenant: str) -> int:
        """Spent plus held on ``tenant`` by every thread of every replica, killed or not."""
        k = [t for t, _ in TENANTS].index(tenant)
        values = self.counters.read()
        return sum(values[i] for i in range(k, len(values), len(TENANTS)))

    def held_by(self, index: int, tenant: str) -> int:
        k = [t for t, _ in TENANTS].index(tenant)
        values = self.counters.read()
        first = index * THREADS * len(TENANTS)
        return sum(values[first + t * len(TENANTS) + k] for t in range(THREADS))

    def kill(self, index: int) -> None:
        self.processes[index].send_signal(signal.SIGKILL)
        self.processes[index].wait(10)

    def finish(self) -> None:
        for index, p in enumerate(self.processes):
            code = p.wait(120)
            if code != -signal.SIGKILL:
                assert code == 0, (self.tmp / f"r{index}.log").read_text()[-3000:]

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        drop_prefix(self.redis_url, self.prefix)

    def lease(self, tenant: str) -> dict[str, int]:
        client = redis.Redis.from_url(self.redis_url)
        raw = client.hgetall(budget_key(self.prefix, tenant, PERIOD_START))
        client.close()
        return {k.decode(): int(v) for k, v in raw.items() if not k.startswith((b"a:", b"m:", b"i:"))}  # type: ignore[union-attr]


@pytest.fixture
def fleet(tmp_path: Path, redis_url: str) -> object:
    made: list[Fleet] = []

    def make(**options: object) -> Fleet:
        f = Fleet(tmp_path, redis_url, **options)  # type: ignore[arg-type]
        made.append(f)
        return f.start()

    yield make
    for f in made:
        f.stop()


@pytest.mark.parametrize("mode", ["strict", "fast"])
def test_four_processes_spend_each_budget_exactly_once(fleet: object, mode: str) -> None:
    f: Fleet = fleet(mode=mode)  # type: ignore[operator]
    f.finish()
    for tenant, total in TENANTS:
        held = f.held(tenant)
        assert held <= total * UNIT, f"{tenant}: {held} granted of {total * UNIT}"
        assert held >= total * UNIT - PROCESSES * THREADS * 50_000, f"{tenant}: the budget was not used up"


@pytest.mark.parametrize("mode", ["strict", "fast"])
def test_kill_9_of_replicas_mid_run(fleet: object, mode: str) -> None:
    """Two of four replicas die mid-run. Strict: nothing overspent; their slices stay
    counted until their leases expire, then come back but for each one's window (what
    it may have spent since its last report): that part stays stranded. Fast: their
    unused slices come back after the TTL; the overspend stays within what each had not
    reported (at most one slice per replica)."""
    f: Fleet = fleet(mode=mode)  # type: ignore[operator]
    wait_until(lambda: f.held("t-c") >= 24 * UNIT, 30, "a fifth of t-c spent")
    f.kill(0)
    f.kill(1)
    at_kill = {t: f.lease(t) for t, _ in TENANTS}
    assert f.held("t-c") < 120 * UNIT, "killed mid-run"
    unreported = {
        t: sum(max(lease.get(f"g:r{i}", 0) - lease.get(f"u:r{i}", 0), 0) for i in (0, 1))
        for t, lease in at_kill.items()
    }
    settles = {
        t: [min(lease.get(f"g:r{i}", 0), lease.get(f"c:r{i}", 0)) for i in (0, 1)]
        for t, lease in at_kill.items()
    }
    stranded = {t: sum(settles[t][i] - f.held_by(i, t) for i in (0, 1)) for t in at_kill}
    wait_until(
        lambda: all("x:r0" not in f.lease(t) and "x:r1" not in f.lease(t) for t, _ in TENANTS), 30, "settled"
    )
    f.finish()
    for tenant, total in TENANTS:
        held, budget = f.held(tenant), total * UNIT
        lease = f.lease(tenant)
        assert "s:r0" in lease and "s:r1" in lease, "the dead leases were settled"
        margin = PROCESSES * THREADS * 50_000
        if mode == "strict":
            assert held <= budget, f"{tenant}: {held} granted of {budget}"
            assert [lease["s:r0"], lease["s:r1"]] == settles[tenant], "settled at their caps"
            assert held >= budget - stranded[tenant] - margin, (
                f"{tenant}: more than the dead windows stranded"
            )
        else:
            assert held <= budget + unreported[tenant], f"{tenant}: beyond the fast-mode bound"
            assert held >= budget - margin, f"{tenant}: the dead replicas' slices did not come back"
    if mode == "strict":  # a window is a third of the unspent slice: most of the slices came back
        unspent = sum(
            lease.get(f"g:r{i}", 0) - f.held_by(i, t) for t, lease in at_kill.items() for i in (0, 1)
        )
        assert sum(stranded.values()) <= unspent / 2, f"{stranded} stranded of {unspent} unspent"


@pytest.mark.parametrize("persist", [False, True], ids=["without-data", "with-data"])
def test_redis_killed_and_restarted_mid_run(tmp_path: Path, persist: bool) -> None:
    with redis_server(tmp_path / "redis", persist=persist) as server:
        f = Fleet(tmp_path, server.url).start()
        try:
            wait_until(lambda: f.held("t-c") >= 6 * UNIT, 30, "spending")
            server.kill()
            time.sleep(0.5)
            server.start()
            at_restart = {t: f.held(t) for t, _ in TENANTS}
            assert at_restart["t-c"] < 120 * UNIT - UNIT, "room left to resume into"
            wait_until(lambda: any(f.held(t) > at_restart[t] for t, _ in TENANTS), 30, "service resuming")
            f.finish()
        finally:
            f.stop()
    for tenant, total in TENANTS:
        assert f.held(tenant) <= total * UNIT, f"{tenant}: overspent through the restart"
