"""The usage journal: committed spend per subscription and period, drained exactly once."""

from __future__ import annotations

from datetime import timedelta

from billing_gateway import Gateway, UsageRecord

from .conftest import END, NOW, START, created, paid, pin


def test_drain_reports_committed_spend_once(gw: Gateway) -> None:
    assert gw.drain_usage() == []
    gw.try_spend("cus_1", 5)
    gw.spend("cus_1", 6)
    gw.check("cus_1", 1000)  # a check spends nothing
    held = gw.reserve("cus_1", 50).reservation_id
    assert held is not None
    records = gw.drain_usage()
    assert len(records) == 1
    r = records[0]
    assert isinstance(r, UsageRecord)
    assert (r.tenant_id, r.subscription_id, r.amount, r.period_start) == (
        "cus_1",
        "sub_1",
        11,
        START,
    )
    assert gw.drain_usage() == [], "drained exactly once"
    gw.commit(held, 20)  # a hold counts once committed
    again = gw.drain_usage()
    assert [u.amount for u in again] == [20]
    assert again[0].idempotency_key != r.idempotency_key


def test_spend_before_a_new_period_is_reported_under_the_old_one(gw: Gateway) -> None:
    gw.try_spend("cus_1", 7)
    gw.apply(paid(start=END))
    pin(gw, END + timedelta(days=1))
    gw.try_spend("cus_1", 2)
    records = sorted(gw.drain_usage(), key=lambda u: u.period_start)
    assert [(u.period_start, u.amount) for u in records] == [(START, 7), (END, 2)]
    assert len({u.idempotency_key for u in records}) == 2


def test_idempotency_keys_differ_between_gateways() -> None:
    a, b = pin(Gateway()), pin(Gateway())
    for g in (a, b):
        g.apply(created())
        g.try_spend("cus_1", 1)
    assert a.drain_usage()[0].idempotency_key != b.drain_usage()[0].idempotency_key


def test_many_tenants() -> None:
    gw = pin(Gateway())
    for i in range(50):
        gw.apply(created(f"sub_{i}", f"cus_{i}", ts=NOW))
        gw.try_spend(f"cus_{i}", i)
    records = gw.drain_usage()
    assert sorted(u.amount for u in records) == list(range(1, 50))
