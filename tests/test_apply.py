"""Event application: idempotent, order-tolerant, per-field last-writer-wins."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from billing_gateway import (
    ApplyOutcome,
    Gateway,
    InvalidEvent,
    ParkingFull,
    Reason,
    decode_event,
    to_micros,
)

from .conftest import (
    END,
    NOW,
    SEED_NAMES,
    SEED_NOW,
    START,
    created,
    event,
    paid,
    payment_failed,
    pin,
    seed,
    updated,
)

A = ApplyOutcome


def seed_gateway() -> Gateway:
    return pin(Gateway(), SEED_NOW)


def test_the_three_seed_payloads_in_order() -> None:
    gw = seed_gateway()
    assert [gw.apply(seed(n)) for n in SEED_NAMES] == [A.APPLIED] * 3
    b = gw.budget("cus_12345")
    assert b is not None
    assert (b.subscription_id, b.plan_id, b.plan_name) == (
        "sub_67890",
        "plan_fghij",
        "ProLibr - ENTERPRISE",
    )
    assert (b.total, b.spent, b.reserved, b.remaining) == (500_000_000, 0, 0, 500_000_000)
    assert b.currency == "USD"
    assert b.status == "active"
    assert b.period_start == datetime(2025, 12, 28, 10, tzinfo=UTC)
    assert b.period_end == datetime(2026, 1, 28, 10, tzinfo=UTC)
    assert b.period_start.tzinfo is UTC


@pytest.mark.parametrize("order", list(itertools.permutations(SEED_NAMES)))
def test_the_seed_payloads_in_any_order_converge(order: tuple[str, ...]) -> None:
    expected = seed_gateway()
    for name in SEED_NAMES:
        expected.apply(seed(name))
    gw = seed_gateway()
    outcomes = [gw.apply(seed(name)) for name in order]
    assert gw.budgets() == expected.budgets()
    # Events ahead of their subscription.created wait, and are applied when it comes.
    before_created = order[: order.index("subscription_created")]
    assert outcomes[: len(before_created)] == [A.PARKED] * len(before_created)


def test_reversed_seed_payloads() -> None:
    gw = seed_gateway()
    outcomes = [gw.apply(seed(n)) for n in reversed(SEED_NAMES)]
    assert outcomes == [A.PARKED, A.PARKED, A.APPLIED]
    b = gw.budget("cus_12345")
    assert b is not None
    assert b.total == to_micros("500.00")
    assert b.period_start == datetime(2025, 12, 28, 10, tzinfo=UTC)


def test_duplicates_are_reported_and_change_nothing(gw: Gateway) -> None:
    raw = updated(new_total_budget="7", event_id="evt_dup")
    assert gw.apply(raw) is A.APPLIED
    gw.apply(updated(new_total_budget="9", ts=NOW + timedelta(hours=1)))
    assert gw.apply(raw) is A.DUPLICATE
    assert gw.budget("cus_1").total == to_micros(9)  # type: ignore[union-attr]
    assert gw.apply(seed("subscription_created")) is A.APPLIED
    assert gw.apply(seed("subscription_created")) is A.DUPLICATE


def test_apply_accepts_str_and_event_structs(gw: Gateway) -> None:
    assert gw.apply(updated(new_plan_name="Str", ts=NOW).decode()) is A.APPLIED
    ev = decode_event(updated(new_plan_name="Struct", ts=NOW + timedelta(seconds=1)))
    assert gw.apply(ev) is A.APPLIED
    assert gw.budget("cus_1").plan_name == "Struct"  # type: ignore[union-attr]
    assert gw.apply(ev) is A.DUPLICATE
    with pytest.raises(TypeError):
        gw.apply(42)  # type: ignore[arg-type]


def test_a_late_older_invoice_paid_never_resets_spend(gw: Gateway) -> None:
    assert gw.try_spend("cus_1", 10)
    second = END + timedelta(days=30)
    assert gw.apply(paid(start=second)) is A.APPLIED  # jumps two periods ahead
    assert gw.budget("cus_1").spent == 0  # type: ignore[union-attr]
    pin(gw, second + timedelta(days=1))
    assert gw.try_spend("cus_1", 25)
    assert gw.apply(paid(start=END)) is A.STALE  # the one in between, late
    assert gw.apply(paid(start=second, event_id="evt_replayed_with_new_id")) is A.STALE
    b = gw.budget("cus_1")
    assert b is not None
    assert (b.spent, b.period_start) == (25, second)


def test_invoice_paid_changes_only_the_period_and_the_spend(gw: Gateway) -> None:
    gw.apply(updated(status="past_due", new_total_budget="5", ts=NOW))
    gw.try_spend("cus_1", 3)
    before = gw.budget("cus_1")
    assert gw.apply(paid(start=END, ts=NOW + timedelta(days=1))) is A.APPLIED
    after = gw.budget("cus_1")
    assert before is not None and after is not None
    assert (after.status, after.total, after.plan_id) == ("past_due", to_micros(5), before.plan_id)
    assert (after.spent, after.period_start, after.period_end) == (0, END, END + timedelta(days=30))


def test_per_field_last_writer_wins_with_partial_updates(gw: Gateway) -> None:
    t1, t2, t3 = (NOW + timedelta(minutes=m) for m in (1, 2, 3))
    # Arrive out of order: t3 (budget), t1 (plan + budget + name), t2 (status).
    assert gw.apply(updated(new_total_budget="300", ts=t3)) is A.APPLIED
    assert (
        gw.apply(updated(new_plan_id="plan_x", new_plan_name="X", new_total_budget="1", ts=t1)) is A.APPLIED
    ), "plan fields are newer than the creation even though the budget is not"
    assert gw.apply(updated(status="canceled", ts=t2)) is A.APPLIED
    b = gw.budget("cus_1")
    assert b is not None
    assert (b.plan_id, b.plan_name, b.total, b.status) == (
        "plan_x",
        "X",
        to_micros(300),
        "canceled",
    )
    # Entirely older than every field it carries: stale, nothing changes.
    assert gw.apply(updated(new_total_budget="2", status="active", ts=t1)) is A.STALE
    assert gw.budget("cus_1") == b


def test_update_wins_a_tie_with_the_creation() -> None:
    gw = pin(Gateway())
    upd = updated(new_total_budget="42", ts=START)
    assert gw.apply(upd) is A.PARKED
    assert gw.apply(created(ts=START)) is A.APPLIED
    assert gw.budget("cus_1").total == to_micros(42)  # type: ignore[union-attr]


def test_created_for_a_known_subscription_never_resets_spend(gw: Gateway) -> None:
    assert gw.try_spend("cus_1", 40)
    assert gw.apply(created(ts=START)) is A.STALE  # same content, new event id
    newer = created(ts=NOW, total="200", start=START + timedelta(days=1))
    assert gw.apply(newer) is A.APPLIED
    b = gw.budget("cus_1")
    assert b is not None
    assert (b.spent, b.total, b.period_start) == (40, to_micros(200), START + timedelta(days=1))


def test_the_newest_period_wins_whichever_event_carried_it(gw: Gateway) -> None:
    later = START + timedelta(days=60)
    gw.apply(paid(start=later, ts=NOW))
    # A created (re)delivered later, carrying an older period, does not move it back.
    gw.apply(created(ts=NOW + timedelta(days=1), start=START, total="9"))
    b = gw.budget("cus_1")
    assert b is not None
    assert (b.period_start, b.total) == (later, to_micros(9))


def test_tenant_switches_to_the_newest_subscription(gw: Gateway) -> None:
    assert gw.try_spend("cus_1", to_micros(30))
    newer = created("sub_2", total="50", plan_id="plan_team", ts=NOW)
    assert gw.apply(newer) is A.APPLIED
    b = gw.budget("cus_1")
    assert b is not None
    assert (b.subscription_id, b.plan_id, b.total, b.spent) == (
        "sub_2",
        "plan_team",
        to_micros(50),
        0,
    )
    # Events for the superseded subscription leave the row alone.
    assert gw.apply(updated("sub_1", new_total_budget="999", ts=NOW + timedelta(days=1))) is A.STALE
    assert gw.apply(paid("sub_1", start=END)) is A.STALE
    # An older subscription.created for a third subscription does not take the row.
    assert gw.apply(created("sub_0", ts=START - timedelta(days=30))) is A.STALE
    assert gw.budget("cus_1") == b
    assert len(gw) == 1
    # The spend on sub_1 is not lost to the switch: it is reported under sub_1.
    assert [(u.subscription_id, u.amount) for u in gw.drain_usage()] == [("sub_1", to_micros(30))]


def test_switching_is_order_independent() -> None:
    evs = [
        created("sub_1", ts=START),
        created("sub_2", total="50", ts=NOW),
        updated("sub_2", new_plan_name="Team", ts=NOW + timedelta(hours=1)),
        updated("sub_1", new_plan_name="Old", ts=NOW + timedelta(hours=2)),
    ]
    results = set()
    for perm in itertools.permutations(evs):
        gw = pin(Gateway())
        for raw in perm:
            gw.apply(raw)
        results.add(repr(gw.budgets()))
    assert len(results) == 1
    assert "plan_name='Team'" in results.pop()


def test_payment_failed_sets_past_due_and_status_is_last_writer_wins(gw: Gateway) -> None:
    assert gw.apply(payment_failed(ts=NOW)) is A.APPLIED
    assert gw.budget("cus_1").status == "past_due"  # type: ignore[union-attr]
    assert gw.try_spend("cus_1", 1), "past_due may still spend"
    assert gw.apply(updated(status="active", ts=NOW + timedelta(seconds=1))) is A.APPLIED
    assert gw.apply(payment_failed(ts=NOW - timedelta(seconds=1))) is A.STALE
    assert gw.budget("cus_1").status == "active"  # type: ignore[union-attr]


def test_unknown_event_types_are_ignored(gw: Gateway) -> None:
    before = gw.budgets()
    assert gw.apply(event("coupon.created", {"id": "x"})) is A.IGNORED
    usage = {
        "tenant_id": "cus_1",
        "subscription_id": "sub_1",
        "amount": 5,
        "period_start": "2026-06-01T00:00:00Z",
        "idempotency_key": "k",
    }
    assert gw.apply(event("usage.reported", usage)) is A.IGNORED
    assert gw.budgets() == before
    # Policy events go to the routing table (tests/test_routing.py): a delete is a tombstone.
    assert gw.apply(event("routing_policy.deleted", {"policy_id": "p"})) is A.APPLIED
    # Types the table does not act on are still validated: a gateway never acks garbage.
    with pytest.raises(InvalidEvent, match="tenant_id"):
        gw.apply(event("usage.reported", {"anything": 1}))


def test_parked_events_are_bounded() -> None:
    gw = pin(Gateway(max_parked=2))
    assert gw.apply(updated("sub_a", new_total_budget="1")) is A.PARKED
    assert gw.apply(updated("sub_b", new_total_budget="1")) is A.PARKED
    with pytest.raises(ParkingFull, match="max_parked"):
        gw.apply(updated("sub_c", new_total_budget="1", event_id="evt_c"))
    # Not recorded as seen: once there is room again, the same event is accepted.
    assert gw.apply(created("sub_a")) is A.APPLIED
    assert gw.apply(updated("sub_c", new_total_budget="1", event_id="evt_c")) is A.PARKED


def test_events_contradicting_the_table_are_rejected_whole(gw: Gateway) -> None:
    before = gw.snapshot()
    with pytest.raises(InvalidEvent, match="customer_id"):
        gw.apply(created("sub_1", "cus_other"))
    with pytest.raises(InvalidEvent, match="currency"):
        gw.apply(created("sub_1", currency="EUR", ts=NOW))
    with pytest.raises(InvalidEvent, match="customer_id"):
        gw.apply(updated("sub_1", customer_id="cus_other", new_total_budget="1"))
    with pytest.raises(InvalidEvent, match="customer_id"):
        gw.apply(paid("sub_1", "cus_other"))
    assert gw.snapshot() == before


def test_len_and_budgets() -> None:
    gw = pin(Gateway())
    for i in (3, 1, 2):
        gw.apply(created(f"sub_{i}", f"cus_{i}"))
    assert len(gw) == 3
    assert [b.tenant_id for b in gw.budgets()] == ["cus_1", "cus_2", "cus_3"]
    assert gw.budget("nobody") is None


# ---- canceled is terminal -------------------------------------------------------------------


def canceled_gateway() -> Gateway:
    gw = pin(Gateway())
    gw.apply(created())
    assert gw.apply(updated(status="canceled", ts=NOW)) is A.APPLIED
    return gw


def assert_canceled(gw: Gateway) -> None:
    b = gw.budget("cus_1")
    assert b is not None and b.status == "canceled"
    assert gw.spend("cus_1", 1).reason is Reason.INACTIVE


@pytest.mark.parametrize("later", [timedelta(hours=-1), timedelta(0), timedelta(hours=1)])
def test_no_status_event_revives_a_canceled_subscription(later: timedelta) -> None:
    gw = canceled_gateway()
    ts = NOW + later
    for status in ("active", "trialing", "past_due", "paused"):
        assert gw.apply(updated(status=status, ts=ts)) is A.STALE, status
    assert gw.apply(payment_failed(ts=ts)) is A.STALE
    assert gw.apply(updated(status="canceled", ts=ts)) is A.STALE, "nothing left to change"
    assert_canceled(gw)


def test_a_late_cancellation_wins_over_newer_statuses() -> None:
    gw = pin(Gateway())
    gw.apply(created())
    assert gw.apply(updated(status="active", ts=NOW + timedelta(hours=2))) is A.APPLIED
    assert gw.apply(payment_failed(ts=NOW + timedelta(hours=3))) is A.APPLIED
    assert gw.apply(updated(status="canceled", ts=NOW)) is A.APPLIED, "older, but terminal"
    assert_canceled(gw)


def test_subscription_created_again_does_not_revive() -> None:
    gw = canceled_gateway()
    again = created(ts=NOW + timedelta(days=1), total="500", event_id="evt_created_again")
    assert gw.apply(again) is A.APPLIED  # the newer total still applies
    assert_canceled(gw)
    assert gw.budget("cus_1").total == to_micros(500)  # type: ignore[union-attr]
    assert gw.apply(created(ts=START, status="active", event_id="evt_older_copy")) is A.STALE
    assert_canceled(gw)
    # A created that carries the cancellation cancels whatever its timestamp.
    gw2 = pin(Gateway())
    gw2.apply(created())
    gw2.apply(updated(status="active", ts=NOW))
    assert gw2.apply(created(ts=START - timedelta(days=1), status="canceled")) is A.APPLIED
    assert_canceled(gw2)


def test_other_fields_of_a_canceled_subscription_still_follow_their_events() -> None:
    gw = canceled_gateway()
    later = NOW + timedelta(hours=1)
    assert gw.apply(updated(status="active", new_total_budget="7", ts=later)) is A.APPLIED
    assert gw.apply(paid(start=END)) is A.APPLIED
    b = gw.budget("cus_1")
    assert b is not None
    assert (b.status, b.total, b.period_start) == ("canceled", to_micros(7), END)


def test_parked_status_events_respect_cancellation() -> None:
    gw = pin(Gateway())
    assert gw.apply(updated(status="canceled", ts=NOW)) is A.PARKED
    assert gw.apply(updated(status="active", ts=NOW + timedelta(hours=1))) is A.PARKED
    assert gw.apply(payment_failed(ts=NOW + timedelta(hours=2))) is A.PARKED
    assert gw.apply(created()) is A.APPLIED
    assert_canceled(gw)


def test_cancellation_survives_snapshots() -> None:
    gw = Gateway.restore(canceled_gateway().snapshot())
    pin(gw)
    assert gw.apply(updated(status="active", ts=NOW + timedelta(days=1))) is A.STALE
    assert_canceled(gw)


def test_cancellation_converges_in_any_order() -> None:
    evs = [
        created(),
        updated(status="canceled", ts=NOW),
        updated(status="active", new_total_budget="5", ts=NOW + timedelta(hours=1)),
        payment_failed(ts=NOW + timedelta(hours=2)),
        created(ts=NOW + timedelta(hours=3), status="trialing"),
    ]
    results = set()
    for perm in itertools.permutations(evs):
        gw = pin(Gateway())
        for raw in perm:
            gw.apply(raw)
        results.add(repr(gw.budgets()))
    assert len(results) == 1
    assert "status='canceled'" in results.pop()


def test_a_new_subscription_of_a_canceled_tenant_may_spend() -> None:
    gw = canceled_gateway()
    assert gw.apply(created("sub_2", ts=NOW + timedelta(hours=1))) is A.APPLIED
    assert gw.try_spend("cus_1", 1), "canceled is terminal for a subscription, not for a tenant"


def _padded_update(sub: str, size: int, event_id: str | None = None) -> bytes:
    raw = updated(sub, new_total_budget="1", event_id=event_id)
    return raw[:-2] + b',"padding":"' + b"x" * size + b'"}}'


def test_parked_events_are_bounded_in_bytes_too() -> None:
    """50 parked events of 10 MB each used to hold 510 MB: the default bound is 64 MiB."""
    gw = pin(Gateway())
    ten_mb = 10 * 2**20
    for i in range(6):
        assert gw.apply(_padded_update(f"sub_{i}", ten_mb)) is A.PARKED
    with pytest.raises(ParkingFull, match="max_parked_bytes"):
        gw.apply(_padded_update("sub_6", ten_mb, event_id="evt_big"))
    assert gw.apply(updated("sub_7", new_total_budget="1")) is A.PARKED, "small ones still fit"
    # Room again once a subscription arrives and its events are applied.
    assert gw.apply(created("sub_0", "cus_0")) is A.APPLIED
    assert gw.apply(_padded_update("sub_6", ten_mb, event_id="evt_big")) is A.PARKED


def test_max_parked_bytes_is_configurable_and_survives_snapshots() -> None:
    gw = pin(Gateway(max_parked_bytes=1000))
    assert gw.apply(_padded_update("sub_a", 500)) is A.PARKED
    with pytest.raises(ParkingFull, match="max_parked_bytes"):
        gw.apply(_padded_update("sub_b", 500))
    restored = pin(Gateway.restore(gw.snapshot()))
    with pytest.raises(ParkingFull, match="max_parked_bytes"):
        restored.apply(_padded_update("sub_b", 500))
    assert restored.apply(created("sub_a")) is A.APPLIED
    assert restored.apply(_padded_update("sub_b", 500)) is A.PARKED
    with pytest.raises(ParkingFull):
        pin(Gateway(max_parked_bytes=0)).apply(updated("sub_c"))
