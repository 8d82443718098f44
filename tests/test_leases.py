"""``BudgetLeases`` in one process against a real Redis: slices, refills, returns,
budget and period events, Redis going away and coming back."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from billing_gateway import Gateway, Reason
from billing_gateway.leases import BudgetLeases
from billing_gateway.leases.script import fence_key

from .leases_support import UNIT, created, drop_prefix, new_total, paid, redis_server, unique_prefix

TTL = 1.0


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = unique_prefix()
    yield name
    drop_prefix(redis_url, name)


def replica(total: int = 10, *events: str) -> Gateway:
    gw = Gateway()
    gw.apply(created("cus_1", total))
    for event in events:
        gw.apply(event)
    return gw


async def until(predicate: object, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def learned(leases: BudgetLeases, tenant: str = "cus_1") -> None:
    """Waits out the fence's learning period of fresh state (one TTL from its creation)."""
    client = aioredis.from_url(leases.redis_url)
    key = fence_key(leases.key_prefix, tenant)
    try:
        await leases._refill(tenant, 0)  # the first call creates the fence
        await until_async(lambda: client.exists(key), what="the fence")
        await until_async(lambda: _over(client, key), what="the end of learning")
    finally:
        await client.aclose()


async def _over(client: aioredis.Redis, key: str) -> bool:
    end = int(await client.get(key) or 0)
    seconds, micros = await client.time()
    return seconds * 1000 + micros // 1000 >= end


async def until_async(check: Callable[[], Awaitable[object]], what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"{what} not reached in time"
        await asyncio.sleep(0.05)


async def drain(fleet: list[BudgetLeases], amount: int, quiet_s: float = 5 * TTL) -> int:
    """Spends ``amount`` on every replica in turn until none could for ``quiet_s`` (idle
    replicas give their slices back meanwhile); what was spent."""
    loop = asyncio.get_running_loop()
    spent, last = 0, loop.time()
    while loop.time() - last < quiet_s:
        for leases in fleet:
            if (await leases.spend("cus_1", amount)).allowed:
                spent, last = spent + amount, loop.time()
        await asyncio.sleep(0.01)
    return spent


@pytest.fixture
def fleet_() -> list[BudgetLeases]:
    """The leases a test starts; ``in_loop`` stops them all at its end."""
    return []


def in_loop(body: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Runs an async test in a loop of its own, stopping its ``fleet_`` there at the end."""

    @functools.wraps(body)
    def test(**fixtures: Any) -> None:
        async def main() -> None:
            try:
                await body(**fixtures)
            finally:
                await asyncio.gather(*(leases.stop() for leases in fixtures["fleet_"]))

        asyncio.run(main())

    return test


async def attach(
    running: list[BudgetLeases], gw: Gateway, url: str, prefix: str, **kw: object
) -> BudgetLeases:
    leases = BudgetLeases(gw, url, lease_ttl_s=TTL, key_prefix=prefix, **kw)  # type: ignore[arg-type]
    await leases.start()
    running.append(leases)
    return leases


async def replicas(
    running: list[BudgetLeases], url: str, prefix: str, total: int
) -> tuple[list[Gateway], list[BudgetLeases]]:
    """Three replicas of one tenant's budget, past the learning period."""
    gateways = [replica(total) for _ in range(3)]
    fleet = [await attach(running, gw, url, prefix) for gw in gateways]
    await learned(fleet[0])
    return gateways, fleet


def test_arguments_are_checked() -> None:
    gw = Gateway()
    for bad in ({"mode": "loose"}, {"lease_ttl_s": 0}, {"lease_ttl_s": float("nan")}, {"key_prefix": "a{b"}):
        with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
            BudgetLeases(gw, "redis://127.0.0.1:6379", **bad)  # type: ignore[arg-type]


@in_loop
async def test_a_used_up_slice_says_lease_exhausted_and_spend_refills_it(
    fleet_: list[BudgetLeases], redis_url: str, prefix: str
) -> None:
    gw = replica(10)
    leases = await attach(fleet_, gw, redis_url, prefix)
    assert gw.spend("cus_1", UNIT).reason is Reason.LEASE_EXHAUSTED, "nothing held yet"
    await learned(leases)
    decision = await leases.spend("cus_1", UNIT)
    assert decision.allowed and decision.reason is Reason.OK
    assert leases.stats.grants >= 1 and leases.stats.round_trips >= 1
    spent = UNIT
    while (await leases.spend("cus_1", UNIT)).allowed:
        spent += UNIT
    assert spent == 10 * UNIT, "alone, the replica gets the whole budget, exactly"
    refused = await leases.spend("cus_1", UNIT)
    assert refused.reason is Reason.INSUFFICIENT_BUDGET
    assert leases.stats.refusals[Reason.INSUFFICIENT_BUDGET] >= 1


@in_loop
async def test_a_tenant_new_after_the_first_ttl_spends_at_once(
    fleet_: list[BudgetLeases], redis_url: str, prefix: str
) -> None:
    """Only state created within a TTL of the shared state's epoch learns (it may be state
    a Redis lost); a tenant that appears later is new and gets its slice in one call."""
    gw = replica(10)
    leases = await attach(fleet_, gw, redis_url, prefix)
    await learned(leases)
    gw.apply(created("cus_new", 5))
    decision = await leases.spend("cus_new", UNIT)
    assert decision.allowed, decision
    assert leases.stats.refusals[Reason.LEASE_EXHAUSTED] == 0


@in_loop
async def test_replicas_share_one_budget_exactly(
    fleet_: list[BudgetLeases], redis_url: str, prefix: str
) -> None:
    gateways, fleet = await replicas(fleet_, redis_url, prefix, 50)

    async def spender(leases: BudgetLeases, amount: int) -> int:
        spent = 0
        while True:
            if (d := await leases.spend("cus_1", amount)).allowed:
                spent += amount
            elif d.reason is Reason.INSUFFICIENT_BUDGET:
                return spent
            await asyncio.sleep(0)

    spent = await asyncio.gather(*(spender(leases, 100_000 + 7 * i) for i, leases in enumerate(fleet)))
    assert sum(spent) <= 50 * UNIT
    await asyncio.gather(*(leases.stop() for leases in fleet))
    assert sum(gw.budget("cus_1").spent for gw in gateways) == sum(spent)  # type: ignore[union-attr]
    assert sum(spent) > 50 * UNIT - 3 * 200_000, "no more than a spend's worth is left per replica"


@in_loop
async def test_idle_slices_go_back_and_stop_returns_the_rest(
    fleet_: list[BudgetLeases], redis_url: str, prefix: str
) -> None:
    gw = replica(100)
    leases = await attach(fleet_, gw, redis_url, prefix, replica_id="idle-one")
    await learned(leases)
    assert (await leases.spend("cus_1", UNIT)).allowed
    client = redis.Redis.from_url(redis_url)
    key = next(iter(client.scan_iter(f"{prefix}:*:[0-9]*")))
    await until(lambda: int(client.hget(key, "g:idle-one") or 0) == UNIT)  # type: ignore[arg-type]
    assert leases.stats.returns >= 1 and leases.stats.returned > 0
    assert (await leases.spend("cus_1", 2 * UNIT)).allowed, "it asks again when needed"
    await leases.stop()
    assert int(client.hget(key, "g:idle-one")) == 3 * UNIT, "stop gives back all but what was used"  # type: ignore[arg-type]
    assert gw.spend("cus_1", 1).reason is Reason.LEASE_EXHAUSTED, "a stopped replica spends nothing more"
    client.close()


@in_loop
async def test_budget_changes_and_a_new_period_change_the_shared_budget_once(
    fleet_: list[BudgetLeases], redis_url: str, prefix: str
) -> None:
    gateways, fleet = await replicas(fleet_, redis_url, prefix, 10)
    client = redis.Redis.from_url(redis_url)
    raise_to_20 = new_total("cus_1", 20, "2025-12-01T00:00:00Z")
    older = new_total("cus_1", 5, "2025-11-30T00:00:00Z")
    for i, (gw, leases) in enumerate(zip(gateways, fleet, strict=True)):
        gw.apply(raise_to_20)
        if i == 2:
            gw.apply(older)  # late and older: the table keeps 20, and so does Redis
        assert (await leases.spend("cus_1", UNIT)).allowed
    key = next(iter(client.scan_iter(f"{prefix}:*:[0-9]*")))
    assert int(client.hget(key, "total")) == 20 * UNIT  # type: ignore[arg-type]
    spent = 3 * UNIT + await drain(fleet, UNIT)
    assert spent == 20 * UNIT, "the raised total, shared once (not three times)"

    new_period = paid("cus_1", "2026-06-01T00:00:00Z")
    for gw in gateways:
        gw.apply(new_period)
    await learned(fleet[0])
    spent = await drain(fleet, UNIT)
    assert spent == 20 * UNIT, "a new period is a new shared budget, once"
    keys = sorted(client.scan_iter(f"{prefix}:*:[0-9]*"))
    assert len(keys) == 2
    client.close()


@in_loop
async def test_strict_spends_only_what_it_holds_while_redis_is_down_then_resumes(
    fleet_: list[BudgetLeases], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="billing_gateway.leases")
    with redis_server(tmp_path / "redis", persist=False) as server:
        gw = replica(100)
        leases = await attach(fleet_, gw, server.url, "bg")
        await learned(leases)
        assert (await leases.spend("cus_1", UNIT)).allowed
        state = gw._lease_state("cus_1")
        assert state is not None
        held = state[5] - state[3]
        server.kill()
        spent = 0
        while (await leases.spend("cus_1", 1_000)).allowed:
            spent += 1_000
        assert spent <= held, "only the slice it held"
        assert gw.spend("cus_1", 1).reason is Reason.LEASE_EXHAUSTED
        down = [r.getMessage() for r in caplog.records if "Redis unreachable" in r.getMessage()]
        assert len(down) == 1 and "lease_exhausted" in down[0], "said once, with what it means"
        server.start()
        await learned(leases)  # the restarted Redis lost everything: it learns first
        assert (await leases.spend("cus_1", UNIT)).allowed, "service resumes"
        assert any("Redis reachable again" in r.getMessage() for r in caplog.records)


def test_leases_in_a_thread_of_their_own(redis_url: str, prefix: str) -> None:
    gw = replica(10)
    leases = BudgetLeases(gw, redis_url, lease_ttl_s=TTL, key_prefix=prefix)
    leases.start_in_thread()
    granted = []

    def worker() -> None:
        async def spend() -> None:
            while not (await leases.spend("cus_1", UNIT)).allowed:
                await asyncio.sleep(0.05)
            granted.append(UNIT)

        asyncio.run(spend())

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert granted == [UNIT] * 3
    asyncio.run(leases.stop())
    assert gw.spend("cus_1", 1).reason is Reason.LEASE_EXHAUSTED
