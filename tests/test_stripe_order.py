"""A property: a realistic Stripe lifecycle (created in trial -> active -> upgraded -> invoice
finalized -> past_due -> payment failed -> paid -> active -> canceled), cut anywhere,
delivered shuffled, with duplicates, and applied in between deliveries at random, leaves
billing and a gateway following its outbox in the same state as the lifecycle delivered
in order; and once canceled, the subscription never comes back."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from billing_gateway import Gateway
from billing_gateway.billing.store import BillingStore
from billing_gateway.billing.stripe import inbox
from billing_gateway.billing.stripe.objects import decode_event
from billing_gateway.billing.stripe.settings import StripeSettings
from billing_gateway.billing.stripe.worker import StripeWorker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .stripe_payloads import MONTH, T0, body, customer, event
from .test_stripe_sync import PRICES, deliver, gateway_of, inv_event, plans, sub_event

SUB, CUS, INV = "sub_1Prop", "cus_P", "in_1Prop"
SECOND = {"start": T0 + MONTH, "end": T0 + 2 * MONTH}
LIFECYCLE = [
    event("customer.created", customer(CUS, tenant_id="tenant_p"), created=T0),
    sub_event("created", SUB, CUS, T0 + 1, status="trialing"),
    sub_event("updated", SUB, CUS, T0 + 2, status="active"),
    sub_event("updated", SUB, CUS, T0 + 3, price_id="price_team"),
    inv_event("finalized", INV, SUB, CUS, T0 + MONTH, status="open", **SECOND),
    sub_event("updated", SUB, CUS, T0 + MONTH + 1, status="past_due", price_id="price_team", **SECOND),
    inv_event("payment_failed", INV, SUB, CUS, T0 + MONTH + 2, status="open", **SECOND),
    inv_event("paid", INV, SUB, CUS, T0 + MONTH + 3, **SECOND),
    sub_event("updated", SUB, CUS, T0 + MONTH + 4, price_id="price_team", **SECOND),
    sub_event("deleted", SUB, CUS, T0 + MONTH + 5, status="canceled", price_id="price_team", **SECOND),
]


def state(store: BillingStore) -> tuple[Any, ...]:
    sub = store.get_subscription(SUB)
    assert sub is not None
    gw: Gateway = gateway_of(store)
    budget = gw.budget(sub.customer_id)
    assert budget is not None
    invoices = [(i.id, i.status, i.total) for i in store.list_invoices()]
    return (
        (sub.customer_id, sub.status, sub.plan_id, sub.total_budget, sub.period_start, sub.period_end),
        invoices,
        (budget.status, budget.plan_id, budget.total, budget.period_start, budget.period_end),
    )


def run(events: list[dict[str, Any]], drains: list[bool]) -> tuple[Any, ...]:
    with tempfile.TemporaryDirectory() as tmp:
        store = BillingStore.open(str(Path(tmp) / "b.db"))
        now = [datetime(2026, 6, 1, tzinfo=UTC)]
        store.clock = lambda: now[0]
        plans(store)
        worker = StripeWorker(store, StripeSettings(price_map=PRICES), max_attempts=1000, backoff_s=1)
        canceled = False
        for evt, drain in zip(events, drains, strict=True):
            now[0] += timedelta(seconds=10)  # earlier failures are due again
            if drain:
                deliver(store, evt, worker=worker)
            else:
                deliver_only(store, evt)
            sub = store.get_subscription(SUB)
            if sub is not None:
                assert not (canceled and sub.status != "canceled"), "a canceled subscription came back"
                canceled = sub.status == "canceled"
        for _ in range(len(events)):  # what waited for its subscription, then the rest
            now[0] += timedelta(seconds=10)
            worker.drain()
        result = state(store)
        store.engine.dispose()
        return result


def deliver_only(store: BillingStore, evt: dict[str, Any]) -> None:
    payload = body(evt)
    inbox.receive(store, decode_event(payload), payload)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, list[dict[str, Any]], list[bool]]:
    cut = draw(st.integers(2, len(LIFECYCLE)))
    events = LIFECYCLE[:cut]
    repeats = draw(st.lists(st.sampled_from(events), max_size=4))
    shuffled = draw(st.permutations(events + repeats))
    drains = draw(st.lists(st.booleans(), min_size=len(shuffled), max_size=len(shuffled)))
    return cut, shuffled, drains


IN_ORDER: dict[int, tuple[Any, ...]] = {}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
def test_shuffled_duplicated_lifecycles_converge(case: tuple[int, list[dict[str, Any]], list[bool]]) -> None:
    cut, events, drains = case
    if cut not in IN_ORDER:
        IN_ORDER[cut] = run(LIFECYCLE[:cut], [True] * cut)
    assert run(events, drains) == IN_ORDER[cut]


def test_the_whole_lifecycle_in_order_ends_canceled_on_the_team_plan() -> None:
    (sub, invoices, budget) = run(LIFECYCLE, [True] * len(LIFECYCLE))
    assert sub[:3] == ("tenant_p", "canceled", "plan_team")
    assert invoices == [(INV, "paid", 29_000_000)]
    assert budget[:2] == ("canceled", "plan_team")
