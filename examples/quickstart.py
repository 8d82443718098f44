"""billing_gateway in two minutes: apply billing events, spend, reserve, read the table.

Run with ``make demo``. Everything happens in this process: no server is involved.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from billing_gateway import (
    Budget,
    Decision,
    Gateway,
    UnknownReservation,
    encode_event,
    events,
    from_micros,
    to_micros,
)

EVENTS = Path(__file__).parent / "events"
GRACE = timedelta(days=1)  # Gateway()'s default grace_period_s


def money(micros: int) -> str:
    """Micro-units as a decimal amount with cents: 4_750_000 -> "$4.75"."""
    return (
        f"${from_micros(micros).quantize(Decimal('0.01')) if micros % 10_000 == 0 else from_micros(micros)}"
    )


def said(d: Decision) -> str:
    """A Decision in words, money as decimals."""
    verdict = "allowed" if d.allowed else f"refused: {d.reason.value}"
    hold = f", hold #{d.reservation_id}" if d.reservation_id is not None else ""
    return f"{verdict} ({money(d.remaining)} left{hold})"


def show(title: str, budgets: list[Budget]) -> None:
    print(f"\n{title}")
    columns = f"{'total':>10}{'spent':>10}{'held':>10}{'left':>10}"
    print(f"  {'tenant':<12}{'plan':<24}{'status':<16}{columns}  period")
    now = datetime.now(UTC)
    for b in sorted(budgets, key=lambda b: b.tenant_id):
        status = f"{b.status} (ended)" if b.period_end + GRACE < now else b.status
        amounts = "".join(f"{money(m):>10}" for m in (b.total, b.spent, b.reserved, b.remaining))
        period = f"{b.period_start:%Y-%m-%d} .. {b.period_end:%Y-%m-%d}"
        print(f"  {b.tenant_id:<12}{b.plan_name:<24}{status:<16}{amounts}  {period}")


def main() -> None:
    gw = Gateway()

    print("1. The three events of the event specification, as published by billing:")
    for path in sorted(EVENTS.glob("*.json")):
        print(f"   {path.name:<32} -> {gw.apply(path.read_bytes())}")
    again = (EVENTS / "01_subscription_created.json").read_bytes()
    print(f"   {'(the first one, redelivered)':<32} -> {gw.apply(again)}")
    show("Budget table:", gw.budgets())
    print("   That period ended in January 2026 (plus a day of grace), so spending is refused:")
    print(f"   spend('cus_12345', $1)    -> {said(gw.spend('cus_12345', to_micros(1)))}")

    print("\n2. A subscription for this month, as a typed event:")
    now = datetime.now(UTC)
    created = events.SubscriptionCreated(
        event_id="evt_demo_1",
        timestamp=now,
        data=events.SubscriptionCreatedData(
            subscription_id="sub_demo",
            customer_id="cus_demo",
            plan_id="plan_team",
            plan_name="Team - monthly",
            total_budget=Decimal("25.00"),
            currency="USD",
            period_start=now - timedelta(days=3),
            period_end=now + timedelta(days=27),
        ),
    )
    print(f"   {encode_event(created).decode()[:100]}...")
    print(f"   apply -> {gw.apply(created)}")

    print("\n3. Spending (amounts are integer micro-units; $0.25 = 250_000):")
    print(f"   try_spend($0.25)          -> {gw.try_spend('cus_demo', to_micros('0.25'))}")
    print(f"   spend($20)                -> {said(gw.spend('cus_demo', to_micros(20)))}")
    print(f"   check($10)                -> {said(gw.check('cus_demo', to_micros(10)))}")
    print(f"   spend for an unknown user -> {said(gw.spend('cus_nobody', 1))}")

    print("\n4. Two-phase spend: hold $4 while the LLM call runs, then post what it cost:")
    hold = gw.reserve("cus_demo", to_micros(4), ttl_s=30)
    print(f"   reserve($4)      -> {said(hold)}")
    assert hold.reservation_id is not None
    gw.commit(hold.reservation_id, to_micros("1.37"))
    print("   commit($1.37)    -> the other $2.63 is released")
    try:
        gw.commit(hold.reservation_id, 1)
    except UnknownReservation as exc:
        print(f"   commit again     -> UnknownReservation: {exc}")

    show("Budget table:", gw.budgets())

    print("\n5. Usage to report back to billing (drained once):")
    for record in gw.drain_usage():
        print(
            f"   {record.subscription_id}: {money(record.amount)} (idempotency key {record.idempotency_key})"
        )
    print(f"   drained again -> {gw.drain_usage()}")

    data = gw.snapshot(cursor=42)
    restored = Gateway.restore(data)
    print(
        f"\n6. Snapshot: {len(data)} bytes; restored {len(restored)} tenants at cursor "
        f"{restored.cursor}; same table: {restored.budgets() == gw.budgets()}"
    )


if __name__ == "__main__":
    main()
