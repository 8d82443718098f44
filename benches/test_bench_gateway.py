"""Gateway benchmarks (``make bench``). Each group has baselines measured in the same run.

The hot path against: a no-op PyO3 method with the same ``(str, int)`` arguments (the
floor), a pure-Python ``dict`` + ``threading.Lock`` table, the ``limits`` library's
in-memory ``hit``, and a Redis Lua ``EVALSHA`` against the local Redis.
"""

from __future__ import annotations

import gc
import itertools
import os
import pickle
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from billing_gateway import Gateway
from billing_gateway._core import NoOp

from tests.conftest import NOW, created, pin, updated

from .baselines import DictLockBudgets, LimitsBudgets, RedisLuaBudgets

TENANT = "cus_00042"
TOTAL = 10**18  # never runs out during a benchmark
MILLION = 1_000_000


@pytest.fixture(scope="module")
def gw() -> Gateway:
    g = pin(Gateway())
    for i in range(10_000):
        g.apply(created(f"sub_{i:05d}", f"cus_{i:05d}", total=str(TOTAL // 10**6)))
    return g


@pytest.fixture(scope="module")
def dict_lock() -> DictLockBudgets:
    peer = DictLockBudgets()
    for i in range(10_000):
        peer.set_total(f"cus_{i:05d}", TOTAL)
    return peer


@pytest.fixture(scope="module")
def lua(redis_url: str | None) -> Iterator[RedisLuaBudgets]:
    if redis_url is None:
        pytest.skip("no Redis on 127.0.0.1:6379 for the Lua baseline")
    peer = RedisLuaBudgets(redis_url)
    peer.set_total(TENANT, TOTAL)
    yield peer
    peer.close()


# ---- try_spend ------------------------------------------------------------------------


def hot(benchmark: Any, fn: Any, *args: Any, rounds: int = 400, iterations: int = 500) -> Any:
    """Fixed rounds x iterations for every sub-microsecond call, so the timer's own
    overhead is amortised identically for the function and its baselines."""
    return benchmark.pedantic(fn, args=args, rounds=rounds, iterations=iterations, warmup_rounds=20)


@pytest.mark.benchmark(group="try_spend")
def test_try_spend__baseline_noop(benchmark: Any) -> None:
    assert hot(benchmark, NoOp().try_spend, TENANT, 1)


@pytest.mark.benchmark(group="try_spend")
def test_try_spend__baseline_dict_lock(benchmark: Any, dict_lock: DictLockBudgets) -> None:
    assert hot(benchmark, dict_lock.try_spend, TENANT, 1)


@pytest.mark.benchmark(group="try_spend")
def test_try_spend__baseline_limits(benchmark: Any) -> None:
    peer = LimitsBudgets()
    peer.set_total(TENANT, 2**62)
    assert hot(benchmark, peer.try_spend, TENANT, 1, rounds=200, iterations=20)


@pytest.mark.benchmark(group="try_spend")
def test_try_spend__baseline_redis_lua(benchmark: Any, lua: RedisLuaBudgets) -> None:
    assert hot(benchmark, lua.try_spend, TENANT, 1, rounds=300, iterations=1)


@pytest.mark.benchmark(group="try_spend")
def test_try_spend__gateway(benchmark: Any, gw: Gateway) -> None:
    assert hot(benchmark, gw.try_spend, TENANT, 1)


# ---- decisions --------------------------------------------------------------------------


@pytest.mark.benchmark(group="decision")
def test_decision__baseline_noop(benchmark: Any) -> None:
    assert hot(benchmark, NoOp().try_spend, TENANT, 1)


@pytest.mark.benchmark(group="decision")
def test_decision__spend(benchmark: Any, gw: Gateway) -> None:
    assert hot(benchmark, gw.spend, TENANT, 1)


@pytest.mark.benchmark(group="decision")
def test_decision__check(benchmark: Any, gw: Gateway) -> None:
    assert hot(benchmark, gw.check, TENANT, 1)


# ---- two-phase ----------------------------------------------------------------------------


@pytest.mark.benchmark(group="reserve_commit")
def test_reserve_commit__baseline_dict_lock(benchmark: Any, dict_lock: DictLockBudgets) -> None:
    def once() -> None:
        dict_lock.reserve(TENANT, 5)
        dict_lock.commit(TENANT, 5, 3)

    hot(benchmark, once)


@pytest.mark.benchmark(group="reserve_commit")
def test_reserve_commit__gateway(benchmark: Any, gw: Gateway) -> None:
    reserve, commit = gw.reserve, gw.commit

    def once() -> None:
        commit(reserve(TENANT, 5).reservation_id, 3)  # type: ignore[arg-type]

    hot(benchmark, once)


# ---- apply --------------------------------------------------------------------------------

ROUNDS, PER_ROUND = 20, 5_000


def distinct_updates() -> Iterator[bytes]:
    """Fresh events (new ids, newer timestamps), so none is a duplicate."""
    for i in range(ROUNDS * PER_ROUND + 1):
        yield updated(
            f"sub_{i % 10_000:05d}",
            ts=NOW + timedelta(milliseconds=i),
            new_total_budget="1000",
            new_plan_name="Team",
        )


@pytest.mark.benchmark(group="apply")
def test_apply__baseline_msgspec_decode(benchmark: Any) -> None:
    """msgspec decoding the same bytes alone (no validation, no table)."""
    events = iter(list(distinct_updates()))
    decode = msgspec.json.decode
    benchmark.pedantic(lambda: decode(next(events)), rounds=ROUNDS, iterations=PER_ROUND)


@pytest.mark.benchmark(group="apply")
def test_apply__gateway_bytes(benchmark: Any, gw: Gateway) -> None:
    events = iter(list(distinct_updates()))
    start = time.perf_counter()
    benchmark.pedantic(lambda: gw.apply(next(events)), rounds=ROUNDS, iterations=PER_ROUND)
    elapsed = time.perf_counter() - start
    benchmark.extra_info["events_per_s"] = f"{ROUNDS * PER_ROUND / elapsed:,.0f}"


# ---- one million tenants ------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def million_events() -> Iterator[bytes]:
    template = created("SUB", "CUS", total="100", ts=NOW, event_id="EVT")
    for i in range(MILLION):
        n = f"{i:07d}"
        yield (
            template.replace(b"SUB", b"sub_" + n.encode(), 1)
            .replace(b"CUS", b"cus_" + n.encode(), 1)
            .replace(b"EVT", b"evt_" + n.encode(), 1)
        )


@pytest.fixture(scope="module")
def million() -> dict[str, Any]:
    gc.collect()
    before = rss_bytes()
    g = Gateway()
    for raw in million_events():
        g.apply(raw)
    gw_bytes = rss_bytes() - before
    gc.collect()
    before = rss_bytes()
    peer = DictLockBudgets()
    for i in range(MILLION):
        peer.set_total(f"cus_{i:07d}", 100_000_000)
    dict_bytes = rss_bytes() - before
    assert len(g) == MILLION
    return {"gw": g, "peer": peer, "gw_bytes": gw_bytes, "dict_bytes": dict_bytes}


@pytest.mark.benchmark(group="snapshot_1M")
def test_snapshot_1M__baseline_pickle_dict(benchmark: Any, million: dict[str, Any]) -> None:
    rows = million["peer"]._rows
    benchmark.pedantic(pickle.dumps, args=(rows,), rounds=3, iterations=1)


@pytest.mark.benchmark(group="snapshot_1M")
def test_snapshot_1M__gateway(benchmark: Any, million: dict[str, Any]) -> None:
    data = benchmark.pedantic(million["gw"].snapshot, args=(1,), rounds=3, iterations=1)
    benchmark.extra_info["snapshot_bytes"] = f"{len(data):,}"
    benchmark.extra_info["resident_bytes_per_tenant"] = million["gw_bytes"] // MILLION
    benchmark.extra_info["dict_lock_resident_bytes_per_tenant"] = million["dict_bytes"] // MILLION


@pytest.mark.benchmark(group="restore_1M")
def test_restore_1M__baseline_unpickle_dict(benchmark: Any, million: dict[str, Any]) -> None:
    data = pickle.dumps(million["peer"]._rows)
    benchmark.pedantic(pickle.loads, args=(data,), rounds=3, iterations=1)


@pytest.mark.benchmark(group="restore_1M")
def test_restore_1M__gateway(benchmark: Any, million: dict[str, Any]) -> None:
    data = million["gw"].snapshot(1)
    restored = benchmark.pedantic(Gateway.restore, args=(data,), rounds=3, iterations=1)
    assert len(restored) == MILLION


# Keep the iterator helper honest: the event generator yields distinct ids.
assert len({e[:40] for e in itertools.islice(million_events(), 3)}) == 3
