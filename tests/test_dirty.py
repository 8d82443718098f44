"""``Gateway.dirty``: every change to the table makes the next snapshot due, and a snapshot
clears it without ever losing a change that raced with it."""

from __future__ import annotations

import threading
from datetime import timedelta

from billing_gateway import Gateway

from .conftest import NOW, created, paid, pin, updated


def fresh() -> Gateway:
    gw = pin(Gateway(unknown_tenant="deny"))
    gw.apply(created(total="100"))
    gw.snapshot()
    assert not gw.dirty
    return gw


def test_new_and_restored_gateways_are_clean() -> None:
    assert not Gateway().dirty
    gw = fresh()
    gw.try_spend("cus_1", 1)
    assert gw.dirty
    assert not Gateway.restore(gw.snapshot()).dirty


def test_every_change_makes_the_next_snapshot_due() -> None:
    changes = {
        "try_spend": lambda gw: gw.try_spend("cus_1", 1),
        "spend": lambda gw: gw.spend("cus_1", 1),
        "reserve": lambda gw: gw.reserve("cus_1", 0),
        "apply": lambda gw: gw.apply(updated(new_total_budget="7")),
        "apply a stale event": lambda gw: gw.apply(updated(new_total_budget="7", ts=NOW - timedelta(99))),
        "apply an unknown type": lambda gw: gw.apply(
            b'{"event_id":"x","event_type":"a.b","timestamp":"2026-01-01T00:00:00Z","data":{}}'
        ),
        "park": lambda gw: gw.apply(updated("sub_unknown", new_total_budget="1")),
        "new period": lambda gw: gw.apply(paid()),
    }
    for name, change in changes.items():
        gw = fresh()
        change(gw)
        assert gw.dirty, name
        gw.snapshot()
        assert not gw.dirty, name


def test_commit_release_expiry_and_drain_are_changes() -> None:
    gw = fresh()
    a, b, c = (gw.reserve("cus_1", 5, ttl_s=10).reservation_id for _ in range(3))
    assert a is not None and b is not None and c is not None
    for resolve in (lambda: gw.commit(a, 3), lambda: gw.release(b)):
        gw.snapshot()
        resolve()
        assert gw.dirty
    gw.snapshot()
    pin(gw, NOW + timedelta(seconds=11))
    assert gw.budget("cus_1").reserved == 0  # type: ignore[union-attr]
    assert gw.dirty, "an expiry released a hold"
    gw.snapshot()
    assert [u.amount for u in gw.drain_usage()] == [3]
    assert gw.dirty, "the drained marks must be saved"


def test_what_changes_nothing_leaves_it_clean() -> None:
    gw = fresh()
    raw = updated(new_plan_name="X")
    gw.apply(raw)
    gw.try_spend("cus_1", 1)
    gw.drain_usage()
    gw.snapshot()
    gw.apply(raw)  # duplicate
    gw.check("cus_1", 1)
    gw.try_spend("cus_1", 0)
    gw.try_spend("cus_1", 10**12)  # refused
    gw.try_spend("nobody", 1)
    gw.budget("cus_1")
    gw.budgets()
    assert gw.drain_usage() == []
    assert len(gw) == 1
    assert not gw.dirty


def test_a_spend_racing_a_snapshot_is_never_lost() -> None:
    """Threads spend while snapshots are taken (``snapshot`` releases the GIL while it
    encodes 5,000 rows). At every quiescent point, either the flag is set or the last
    snapshot holds every spend."""
    gw = pin(Gateway())
    tenants = [f"cus_{i}" for i in range(5_000)]
    for i, tenant in enumerate(tenants):
        gw.apply(created(f"sub_{i}", tenant, total="1000000"))

    def spent(g: Gateway) -> int:
        return sum(b.spent for b in g.budgets())

    def spender(offset: int) -> None:
        for i in range(300):
            gw.try_spend(tenants[(offset + i * 7) % len(tenants)], 1)

    for round_ in range(40):
        threads = [threading.Thread(target=spender, args=(round_ * 3 + k,)) for k in range(3)]
        for t in threads:
            t.start()
        last = gw.snapshot()
        for t in threads:
            t.join()
        if gw.dirty:  # the snapshot raced some spends: the next one is due
            last = gw.snapshot()
            assert not gw.dirty
        assert spent(Gateway.restore(last)) == spent(gw) == (round_ + 1) * 900
