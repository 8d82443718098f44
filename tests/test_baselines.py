"""The benchmark baselines implement the same rule as the Gateway, so their ratios are fair."""

from __future__ import annotations

import random

from billing_gateway import Gateway, to_micros

from benches.baselines import DictLockBudgets, LimitsBudgets, RedisLuaBudgets

from .conftest import created, pin

AMOUNTS = [random.Random(3).choice([0, 1, 7, 250_000, 999_999]) for _ in range(300)]


def gateway_grants() -> list[bool]:
    gw = pin(Gateway())
    gw.apply(created(total="10"))
    return [gw.try_spend("cus_1", a) for a in AMOUNTS] + [gw.try_spend("nobody", 1)]


def test_dict_lock_and_limits_grant_what_the_gateway_grants() -> None:
    expected = gateway_grants()
    for peer in (DictLockBudgets(), LimitsBudgets()):
        peer.set_total("cus_1", to_micros(10))
        got = [peer.try_spend("cus_1", a) for a in AMOUNTS] + [peer.try_spend("nobody", 1)]
        assert got == expected, type(peer).__name__


def test_dict_lock_two_phase() -> None:
    peer = DictLockBudgets()
    peer.set_total("t", 10)
    assert peer.reserve("t", 8)
    assert not peer.try_spend("t", 3)
    peer.commit("t", 8, 5)
    assert peer.spent("t") == 5
    assert peer.try_spend("t", 5)


def test_redis_lua_grants_what_the_gateway_grants(redis_url: str) -> None:
    peer = RedisLuaBudgets(redis_url, prefix="bgw:test:")
    try:
        peer.set_total("cus_1", to_micros(10))
        got = [peer.try_spend("cus_1", a) for a in AMOUNTS] + [peer.try_spend("nobody", 1)]
        assert got == gateway_grants()
        assert peer.spent("cus_1") == sum(a for a, ok in zip(AMOUNTS, got, strict=False) if ok)
    finally:
        peer.close()
