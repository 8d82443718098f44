"""Stripe events applied to billing by the worker, on SQLite and PostgreSQL: every handled
type from realistic payloads, the outbox events gateways follow, arrival order never
trusted, canceled final, retries, dead events and their redrive, the audit trail."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from billing_gateway import Gateway, to_micros
from billing_gateway.billing.store import BillingStore
from billing_gateway.billing.stripe import inbox
from billing_gateway.billing.stripe.objects import STATUS_MAP, decode_event
from billing_gateway.billing.stripe.objects import to_micros as stripe_micros
from billing_gateway.billing.stripe.settings import SettingsError, StripeSettings, parse_price_map
from billing_gateway.billing.stripe.worker import StripeWorker

from .stripe_payloads import MONTH, T0, body, customer, event, invoice, subscription

PRICES = {"plan_pro": "price_pro", "plan_team": "price_team"}


def plans(store: BillingStore) -> None:
    store.create_plan(plan_id="plan_pro", name="Pro", currency="USD", included_budget=to_micros(100), price=0)
    store.create_plan(
        plan_id="plan_team", name="Team", currency="USD", included_budget=to_micros(500), price=0
    )


def deliver(store: BillingStore, *events: dict[str, Any], worker: StripeWorker | None = None) -> StripeWorker:
    worker = worker or StripeWorker(store, StripeSettings(price_map=PRICES), backoff_s=0.0)
    for evt in events:
        payload = body(evt)
        inbox.receive(store, decode_event(payload), payload)
    worker.drain()
    return worker


def outbox(store: BillingStore) -> list[dict[str, Any]]:
    return [msgspec.json.decode(p) for _, p in store.list_events(limit=10_000)]


def types(store: BillingStore) -> list[str]:
    return [e["event_type"] for e in outbox(store) if e["event_type"] != "stripe.event_processed"]


def gateway_of(store: BillingStore) -> Gateway:
    gw = Gateway()
    for _, payload in store.list_events(limit=10_000):
        gw.apply(payload)
    return gw


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_a_customer_takes_its_tenant_id_and_is_updated(store: BillingStore) -> None:
    deliver(store, event("customer.created", customer("cus_S1", tenant_id="tenant_42")))
    found = store.get_customer("tenant_42")
    assert found is not None and found.stripe_customer_id == "cus_S1" and found.name == "Acme"
    deliver(store, event("customer.updated", customer("cus_S1", name="Acme Corp"), created=T0 + 5))
    assert (found := store.get_customer("tenant_42")) is not None and found.name == "Acme Corp"
    assert types(store) == ["customer.created"]


def test_an_existing_billing_customer_is_linked_not_duplicated(store: BillingStore) -> None:
    local = store.create_customer("Local", "l@x.io")
    deliver(store, event("customer.created", customer("cus_S2", tenant_id=local.id)))
    found = store.get_customer(local.id)
    assert found is not None and found.stripe_customer_id == "cus_S2"
    assert types(store) == ["customer.created"], "only the local creation"


def sub_event(kind: str, sub: str, cus: str, created: int, **fields: Any) -> dict[str, Any]:
    return event(f"customer.subscription.{kind}", subscription(sub, cus, **fields), created=created)


def inv_event(kind: str, inv: str, sub: str, cus: str, created: int, **fields: Any) -> dict[str, Any]:
    return event(f"invoice.{kind}", invoice(inv, sub, cus, **fields), created=created)


def test_a_lifecycle_reaches_billing_and_the_gateways(store: BillingStore) -> None:
    plans(store)
    sub, cus, team = "sub_1Life", "cus_L", "price_team"
    second = {"start": T0 + MONTH, "end": T0 + 2 * MONTH}
    deliver(
        store,
        event("customer.created", customer(cus, tenant_id="tenant_life"), created=T0),
        sub_event("created", sub, cus, T0 + 1, status="trialing"),
    )
    found = store.get_subscription(sub)
    assert found is not None and (found.customer_id, found.status) == ("tenant_life", "trialing")
    assert (found.period_start, found.period_end) == (at(T0), at(T0 + MONTH)), "read from the items"
    assert found.total_budget == to_micros(100) and found.stripe_subscription_id == sub
    assert found.plan_id == "plan_pro"
    deliver(
        store,
        sub_event("updated", sub, cus, T0 + 2, status="active"),
        sub_event("updated", sub, cus, T0 + 3, price_id=team),
        inv_event("finalized", "in_1Life", sub, cus, T0 + MONTH, status="open", **second),
        sub_event("updated", sub, cus, T0 + MONTH + 1, status="past_due", price_id=team, **second),
        inv_event("payment_failed", "in_1Life", sub, cus, T0 + MONTH + 2, status="open", **second),
        inv_event("paid", "in_1Life", sub, cus, T0 + MONTH + 3, **second),
        sub_event("updated", sub, cus, T0 + MONTH + 4, price_id=team, **second),
    )
    found = store.get_subscription(sub)
    assert found is not None and (found.status, found.plan_id) == ("active", "plan_team")
    assert found.total_budget == to_micros(500)
    assert (found.period_start, found.period_end) == (at(T0 + MONTH), at(T0 + 2 * MONTH))
    (paid,) = store.list_invoices("tenant_life")
    assert (paid.id, paid.status, paid.total, paid.currency) == ("in_1Life", "paid", 29_000_000, "USD")
    budget = gateway_of(store).budget("tenant_life")
    assert budget is not None and (budget.status, budget.plan_id) == ("active", "plan_team")
    assert budget.total == to_micros(500)
    assert budget.period_start == at(T0 + MONTH), "Stripe's next period renewed the gateway's"
    deliver(store, sub_event("deleted", sub, cus, T0 + MONTH + 9, status="canceled", price_id=team))
    assert (found := store.get_subscription(sub)) is not None and found.status == "canceled"
    assert (b := gateway_of(store).budget("tenant_life")) is not None and b.status == "canceled"
    assert types(store) == [
        "customer.created", "subscription.created", "subscription.updated", "subscription.updated",
        "invoice.created", "invoice.paid", "subscription.updated",  # the next period opens, past_due
        "invoice.paid", "subscription.updated", "subscription.updated",  # paid; active; canceled
    ]  # fmt: skip


def test_an_older_event_changes_nothing_and_canceled_is_final(store: BillingStore) -> None:
    plans(store)
    sub = "sub_1Old"
    deliver(
        store,
        event(
            "customer.subscription.updated",
            subscription(sub, "cus_O", tenant_id="t_o", status="past_due"),
            created=T0 + 10,
        ),
        event(
            "customer.subscription.created",
            subscription(sub, "cus_O", tenant_id="t_o", status="active"),
            created=T0 + 1,
        ),
    )
    assert (found := store.get_subscription(sub)) is not None and found.status == "past_due", (
        "the older one is stale"
    )
    deliver(
        store,
        event(
            "customer.subscription.deleted",
            subscription(sub, "cus_O", tenant_id="t_o", status="canceled"),
            created=T0 + 20,
        ),
        event(
            "customer.subscription.updated",
            subscription(sub, "cus_O", tenant_id="t_o", status="active"),
            created=T0 + 30,
        ),
        event(
            "customer.subscription.resumed",
            subscription(sub, "cus_O", tenant_id="t_o", status="active"),
            created=T0 + 40,
        ),
    )
    assert (found := store.get_subscription(sub)) is not None and found.status == "canceled"
    rows = {r.event_type: r.status for r in inbox.list_rows(store)}
    assert set(rows.values()) == {"processed"}
    outcomes = [e["data"]["outcome"] for e in outbox(store) if e["event_type"] == "stripe.event_processed"]
    assert any(o.startswith("stale") for o in outcomes)
    assert outcomes[-2:] == ["unchanged: canceled is final"] * 2


def test_periods_from_before_2025_03_31_are_read_from_the_subscription(store: BillingStore) -> None:
    plans(store)
    legacy = subscription(
        "sub_1Legacy", "cus_G", tenant_id="t_g", start=T0 + 7, end=T0 + 7 + MONTH, on_items=False
    )
    deliver(store, event("customer.subscription.created", legacy))
    found = store.get_subscription("sub_1Legacy")
    assert found is not None and (found.period_start, found.period_end) == (at(T0 + 7), at(T0 + 7 + MONTH))


def test_a_plans_own_stripe_price_id_maps_it(store: BillingStore) -> None:
    store.create_plan(
        plan_id="plan_x", name="X", currency="USD", included_budget=1, price=0, stripe_price_id="price_x"
    )
    deliver(
        store,
        event(
            "customer.subscription.created",
            subscription("sub_1X", "cus_X", tenant_id="t_x", price_id="price_x"),
        ),
    )
    assert (found := store.get_subscription("sub_1X")) is not None and found.plan_id == "plan_x"


def test_unknown_types_are_stored_and_ignored_and_audited(store: BillingStore) -> None:
    deliver(store, event("charge.refunded", {"id": "ch_1", "object": "charge"}))
    (row,) = inbox.list_rows(store)
    assert row.status == "ignored"
    (audit,) = outbox(store)
    assert audit["event_type"] == "stripe.event_processed"
    assert audit["data"]["stripe_event_type"] == "charge.refunded" and audit["data"]["outcome"].startswith(
        "ignored"
    )
    assert audit["correlation_id"] == row.event_id and audit["data"]["actor"] == "stripe-webhook"


def test_failures_back_off_then_die_and_a_retry_applies_them(store: BillingStore) -> None:
    evt = event(
        "customer.subscription.created",
        subscription("sub_1Dead", "cus_D", tenant_id="t_d", price_id="price_unknown"),
    )
    now = [datetime.now(UTC)]
    store.clock = lambda: now[0]
    worker = StripeWorker(store, StripeSettings(price_map=PRICES), max_attempts=3, backoff_s=10)
    deliver(store, evt, worker=worker)
    (row,) = inbox.list_rows(store)
    assert (row.status, row.attempts) == ("pending", 1) and "price_unknown" in (row.last_error or "")
    assert worker.drain() == 0, "backing off"
    for wait in (10, 20):
        now[0] += timedelta(seconds=wait)
        assert worker.drain() == 1
    (row,) = inbox.list_rows(store)
    assert (row.status, row.attempts) == ("dead", 3)
    assert store.get_subscription("sub_1Dead") is None, "nothing of it was applied"
    store.create_plan(
        plan_id="plan_u",
        name="U",
        currency="USD",
        included_budget=1,
        price=0,
        stripe_price_id="price_unknown",
    )
    assert inbox.retry(store, [row.event_id]) == 1
    assert worker.drain() == 1
    assert inbox.list_rows(store)[0].status == "processed"
    assert store.get_subscription("sub_1Dead") is not None


def test_an_invoice_before_its_subscription_waits_for_it(store: BillingStore) -> None:
    plans(store)
    now = [datetime.now(UTC)]
    store.clock = lambda: now[0]
    worker = StripeWorker(store, StripeSettings(price_map=PRICES), backoff_s=10)
    deliver(
        store,
        event("invoice.paid", invoice("in_1Early", "sub_1Late", "cus_E"), created=T0 + 5),
        worker=worker,
    )
    (row,) = inbox.list_rows(store)
    assert row.status == "pending" and "not synced yet" in (row.last_error or "")
    deliver(
        store,
        event(
            "customer.subscription.created", subscription("sub_1Late", "cus_E", tenant_id="t_e"), created=T0
        ),
        worker=worker,
    )
    now[0] += timedelta(seconds=10)
    worker.drain()
    assert {r.status for r in inbox.list_rows(store)} == {"processed"}
    assert [i.status for i in store.list_invoices()] == ["paid"]


def test_a_subscription_of_an_unknown_customer_waits_for_the_customer(store: BillingStore) -> None:
    plans(store)
    now = [datetime.now(UTC)]
    store.clock = lambda: now[0]
    worker = StripeWorker(store, StripeSettings(price_map=PRICES), backoff_s=10)
    deliver(store, sub_event("created", "sub_1Wait", "cus_W", T0 + 1), worker=worker)
    assert "customer cus_W is not synced yet" in (inbox.list_rows(store)[0].last_error or "")
    deliver(store, event("customer.created", customer("cus_W", tenant_id="tenant_w")), worker=worker)
    now[0] += timedelta(seconds=10)
    worker.drain()
    assert (found := store.get_subscription("sub_1Wait")) is not None and found.customer_id == "tenant_w"


def test_every_stripe_status_has_a_billing_status() -> None:
    stripe_statuses = {
        "incomplete",
        "incomplete_expired",
        "trialing",
        "active",
        "past_due",
        "canceled",
        "unpaid",
        "paused",
    }
    assert set(STATUS_MAP) == stripe_statuses


def test_amounts_convert_exactly_by_the_currencys_decimals() -> None:
    assert stripe_micros(2900, "usd") == 29_000_000
    assert stripe_micros(500, "JPY") == 500_000_000
    assert stripe_micros(1234, "kwd") == 1_234_000
    assert stripe_micros(1, "eur") == 10_000


def test_the_price_map_reads_pairs_or_json_and_names_mistakes() -> None:
    assert parse_price_map("plan_a=price_1, plan_b=price_2") == {"plan_a": "price_1", "plan_b": "price_2"}
    assert parse_price_map(json.dumps({"plan_a": "price_1"})) == {"plan_a": "price_1"}
    for bad in ("plan_a", "plan_a=", "{not json", '{"a": 1}', "a=p,b=p"):
        with pytest.raises(SettingsError, match="STRIPE_PRODUCT_PRICE_MAP"):
            parse_price_map(bad)
    with pytest.raises(SettingsError, match="STRIPE_PRORATION_BEHAVIOR"):
        StripeSettings.from_env({"STRIPE_PRORATION_BEHAVIOR": "sometimes"})
    settings = StripeSettings.from_env(
        {"STRIPE_WEBHOOK_SECRET": "whsec_a, whsec_b", "STRIPE_PRODUCT_PRICE_MAP": "p=q"}
    )
    assert settings.webhook_secrets == ("whsec_a", "whsec_b") and settings.price_for("p") == "q"
