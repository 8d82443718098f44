"""The usage journal: committed spend per subscription and period, drained exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from billing_gateway import ApplyOutcome, Gateway, InvalidEvent, UsageRecord

from .conftest import END, NOW, START, created, event, paid, pin


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


def test_out_of_range_periods_are_refused_and_every_read_stays_total(gw: Gateway) -> None:
    """A year-0 period used to be applied; then budget(), budgets() and drain_usage() raised
    and the usage drain_usage() had already marked drained was lost."""
    gw.try_spend("cus_1", 5)
    hostile = [
        event("subscription.created", _created_data(period_start="0000-01-01T00:00:00Z")),
        event("subscription.created", _created_data(period_start="0001-01-01T00:30:00+01:00")),
        event("subscription.created", _created_data(period_end="9999-12-31T23:00:00-02:00")),
        event("subscription.created", _created_data(period_end="2025-01-01T00:00:00Z")),
        event("invoice.paid", _paid_data(new_period_end="9999-12-31T23:59:59.9999995Z")),
    ]
    for raw in hostile:
        with pytest.raises(InvalidEvent, match=r"^data\.(new_)?period_(start|end): "):
            gw.apply(raw)
    assert [b.tenant_id for b in gw.budgets()] == ["cus_1"]
    assert gw.budget("cus_9") is None
    assert [(u.tenant_id, u.amount) for u in gw.drain_usage()] == [("cus_1", 5)]
    # The extremes Python can hold are accepted, and read back.
    edge = _created_data(period_start="0001-01-01T00:00:00Z", period_end="9999-12-31T23:59:59.999999Z")
    assert gw.apply(event("subscription.created", edge)) is ApplyOutcome.APPLIED
    b = gw.budget("cus_9")
    extremes = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))
    assert b is not None and (b.period_start, b.period_end) == extremes
    gw.try_spend("cus_9", 1)
    assert sorted(u.amount for u in gw.drain_usage()) == [1]
    assert Gateway.restore(gw.snapshot()).budgets() == gw.budgets()


def _created_data(**overrides: str) -> dict[str, object]:
    data: dict[str, object] = {
        "subscription_id": "sub_9",
        "customer_id": "cus_9",
        "plan_id": "p",
        "plan_name": "P",
        "total_budget": 10,
        "currency": "USD",
        "period_start": "2026-06-01T00:00:00Z",
        "period_end": "2026-07-01T00:00:00Z",
    }
    return data | overrides


def _paid_data(**overrides: str) -> dict[str, object]:
    data: dict[str, object] = {
        "invoice_id": "inv",
        "customer_id": "cus_1",
        "subscription_id": "sub_1",
        "amount_paid": 1,
        "new_period_start": "2026-07-01T00:00:00Z",
        "new_period_end": "2026-08-01T00:00:00Z",
    }
    return data | overrides
