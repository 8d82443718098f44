"""The tenant endpoints Stripe serves (portal, setup intents, payment methods, upcoming
invoice, plan changes and cancellations now or at the period's end) against a local
stateful Stripe: Stripe first, billing following its answer and its webhooks; scoped like
the rest of the API; Stripe's refusals as clear 4xx/5xx; billing alone without a key."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import uvicorn
from billing_gateway import to_micros
from billing_gateway.billing.api import create_app
from billing_gateway.billing.client import BillingClient
from billing_gateway.billing.client import NotFound as ClientNotFound
from billing_gateway.billing.store import BillingStore
from billing_gateway.billing.stripe.gateway import StripeGateway
from billing_gateway.billing.stripe.metrics import StripeMetrics
from billing_gateway.billing.stripe.runtime import StripeRuntime
from billing_gateway.billing.stripe.settings import StripeSettings
from billing_gateway.billing.stripe.worker import StripeWorker
from billing_gateway.natsd import free_port
from litestar.testing import TestClient

from .stripe_fake import API_KEY, DECLINING_CARD, FakeStripe, running
from .stripe_payloads import SECRET, T0, body, event, invoice, sign


@dataclass
class Setup:
    store: BillingStore
    fake: FakeStripe
    http: TestClient  # type: ignore[type-arg]
    runtime: StripeRuntime
    admin: dict[str, str]

    def call(self, method: str, path: str, json: Any = None, key: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else self.admin
        return self.http.request(method, f"/api/v1{path}", json=json, headers=headers)

    def webhooks(self) -> None:
        """Delivers what the fake Stripe sent, signed, and lets the worker apply it."""
        for evt in self.fake.events:
            payload = body(evt)
            assert (
                self.http.post(
                    "/api/v1/stripe/webhook", content=payload, headers={"Stripe-Signature": sign(payload)}
                ).status_code
                == 200
            )
        self.fake.events.clear()
        StripeWorker(self.store, self.runtime.settings, self.runtime.gateway).drain()


@pytest.fixture
def setup(store: BillingStore) -> Iterator[Setup]:
    with running(T0) as fake:
        settings = StripeSettings(
            secret_key=API_KEY, api_base=fake.url, webhook_secrets=(SECRET,),
            price_map={"plan_pro": "price_pro", "plan_team": "price_team"},
            portal_return_url="https://app.test/billing",
        )  # fmt: skip
        metrics = StripeMetrics()
        runtime = StripeRuntime(settings, StripeGateway(settings, metrics, max_network_retries=0), metrics)
        for plan, budget in (("plan_pro", 100), ("plan_team", 500)):
            store.create_plan(
                plan_id=plan, name=plan, currency="USD", included_budget=to_micros(budget), price=0
            )
        _, admin = store.create_api_key(["billing:*"])
        with TestClient(create_app(store, runtime)) as http:
            yield Setup(store, fake, http, runtime, {"Authorization": f"Bearer {admin}"})


def subscribe(s: Setup, name: str = "Acme") -> tuple[str, str]:
    customer = s.call("POST", "/customers", {"name": name, "email": "a@acme.test"}).json()["id"]
    answer = s.call("POST", "/subscriptions", {"customer_id": customer, "plan_id": "plan_pro"})
    assert answer.status_code == 201, answer.text
    return customer, answer.json()["id"]


def test_a_subscription_is_created_in_stripe_first_and_the_webhooks_agree(setup: Setup) -> None:
    customer, sub = subscribe(setup)
    assert sub in setup.fake.subscriptions and sub.startswith("sub_fake"), "billing took Stripe's id"
    (stripe_customer,) = setup.fake.customers.values()
    assert stripe_customer["metadata"] == {"tenant_id": customer}
    local = setup.store.get_subscription(sub)
    assert local is not None and (local.customer_id, local.plan_id, local.status) == (
        customer,
        "plan_pro",
        "active",
    )
    before = len(setup.store.list_events(limit=1000))
    setup.webhooks()
    audit = [e for _, e in setup.store.list_events(after=0, limit=1000)][before:]
    assert all(b'"stripe.event_processed"' in e for e in audit), (
        "the webhooks only confirm what billing holds"
    )


def test_plan_changes_now_and_at_the_periods_end(setup: Setup) -> None:
    _, sub = subscribe(setup)
    now = setup.call("POST", f"/subscriptions/{sub}/change-plan", {"plan_id": "plan_team"})
    assert now.status_code == 200 and now.json()["plan_id"] == "plan_team"
    assert now.json()["total_budget"] == "500"
    assert setup.fake.subscriptions[sub]["items"]["data"][0]["price"]["id"] == "price_team"
    later = setup.call(
        "POST", f"/subscriptions/{sub}/change-plan", {"plan_id": "plan_pro", "at_period_end": True}
    )
    assert later.status_code == 200 and later.json()["plan_id"] == "plan_team", "until the period ends"
    (schedule,) = setup.fake.schedules.values()
    assert schedule["phases"][-1]["items"][0]["price"] == "price_pro"
    patched = setup.call("PATCH", f"/subscriptions/{sub}", {"plan_id": "plan_pro"})
    assert (
        patched.status_code == 200
        and setup.fake.subscriptions[sub]["items"]["data"][0]["price"]["id"] == "price_pro"
    )
    assert setup.call("PATCH", f"/subscriptions/{sub}", {"status": "past_due"}).status_code == 409


def test_cancel_at_the_periods_end_then_now(setup: Setup) -> None:
    _, sub = subscribe(setup)
    later = setup.call("POST", f"/subscriptions/{sub}/cancel", {"at_period_end": True})
    assert later.status_code == 200 and later.json()["cancel_at_period_end"] is True
    assert later.json()["status"] == "active"
    now = setup.call("POST", f"/subscriptions/{sub}/cancel", {})
    assert now.status_code == 200 and now.json()["status"] == "canceled"
    assert setup.fake.subscriptions[sub]["status"] == "canceled"
    again = setup.call("POST", f"/subscriptions/{sub}/cancel", {})
    assert again.status_code == 409, "canceled is final"


def test_payment_methods_portal_setup_intents_and_the_upcoming_invoice(setup: Setup) -> None:
    customer, _ = subscribe(setup)
    stripe_customer = setup.store.get_stripe_customer(customer)
    portal = setup.call("POST", f"/customers/{customer}/portal-session")
    assert portal.status_code == 201 and portal.json()["url"].startswith("https://billing.stripe.test/")
    intent = setup.call("POST", f"/customers/{customer}/setup-intents")
    assert intent.status_code == 201 and intent.json()["client_secret"].endswith("_secret_fake")
    card = setup.fake.add_card(stripe_customer)
    assert setup.call("POST", f"/customers/{customer}/payment-methods/{card}/default").status_code == 200
    listed = setup.call("GET", f"/customers/{customer}/payment-methods").json()
    assert [m["id"] for m in listed["data"]] == [card] and listed["default_payment_method"] == card
    upcoming = setup.call("GET", f"/customers/{customer}/upcoming-invoice")
    assert upcoming.status_code == 200 and upcoming.json()["amount_due"] == "29"
    assert upcoming.json()["currency"] == "USD"
    assert setup.call("DELETE", f"/customers/{customer}/payment-methods/{card}").status_code == 204
    assert setup.call("GET", f"/customers/{customer}/payment-methods").json()["data"] == []


def test_other_customers_objects_do_not_exist(setup: Setup) -> None:
    mine, _ = subscribe(setup, "Mine")
    theirs, their_sub = subscribe(setup, "Theirs")
    their_card = setup.fake.add_card(setup.store.get_stripe_customer(theirs))
    _, key = setup.store.create_api_key(["billing:*"], mine)
    for method, path in (
        ("POST", f"/customers/{theirs}/portal-session"),
        ("GET", f"/customers/{theirs}/payment-methods"),
        ("GET", f"/customers/{theirs}/upcoming-invoice"),
        ("POST", f"/subscriptions/{their_sub}/cancel"),
        ("POST", f"/customers/{mine}/payment-methods/{their_card}/default"),
        ("DELETE", f"/customers/{mine}/payment-methods/{their_card}"),
    ):
        answer = setup.call(method, path, {} if method == "POST" else None, key=key)
        assert answer.status_code == 404, (method, path, answer.text)
    assert setup.fake.payment_methods[their_card]["customer"] is not None


def test_stripe_refusals_are_clear_answers(setup: Setup) -> None:
    customer = setup.call("POST", "/customers", {"name": "D", "email": "d@x.io"}).json()["id"]
    setup.store.link_stripe_customer(customer, setup.fake._new_customer({"name": "D"})["id"])
    setup.fake.customers[setup.store.get_stripe_customer(customer)]["invoice_settings"][
        "default_payment_method"
    ] = DECLINING_CARD
    declined = setup.call("POST", "/subscriptions", {"customer_id": customer, "plan_id": "plan_pro"})
    assert declined.status_code == 402 and "card_declined" in declined.json()["detail"]
    assert setup.store.list_events(limit=1000) == [] or all(
        b"subscription.created" not in e for _, e in setup.store.list_events(limit=1000)
    )
    setup.fake.fail_next(503, "api_error", "Stripe is having a moment")
    failed = setup.call("GET", f"/customers/{customer}/payment-methods")
    assert failed.status_code == 502 and "having a moment" in failed.json()["detail"]
    metrics = setup.http.get("/metrics").text
    assert 'billing_stripe_api_errors_total{code="card_declined"} 1' in metrics


def test_without_stripe_billing_works_alone(store: BillingStore) -> None:
    store.create_plan(plan_id="plan_pro", name="Pro", currency="USD", included_budget=1, price=0)
    customer = store.create_customer("Alone", "a@x.io")
    _, admin = store.create_api_key(["billing:*"])
    headers = {"Authorization": f"Bearer {admin}"}
    with TestClient(create_app(store, StripeRuntime())) as http:
        sub = http.post(
            "/api/v1/subscriptions", json={"customer_id": customer.id, "plan_id": "plan_pro"}, headers=headers
        )
        sub_id = sub.json()["id"]
        assert (
            sub.status_code == 201
            and sub_id.startswith("sub_")
            and sub.json()["stripe_subscription_id"] is None
        )
        store.link_stripe_customer(customer.id, "cus_unused")
        portal = http.post(f"/api/v1/customers/{customer.id}/portal-session", headers=headers)
        assert portal.status_code == 409 and "STRIPE_SECRET_KEY" in portal.json()["detail"]
        change = {"plan_id": "plan_pro", "at_period_end": True}
        later = http.post(f"/api/v1/subscriptions/{sub_id}/change-plan", json=change, headers=headers)
        assert later.status_code == 409
        ending = http.post(
            f"/api/v1/subscriptions/{sub_id}/cancel", json={"at_period_end": True}, headers=headers
        )
        assert ending.status_code == 200 and ending.json()["cancel_at_period_end"] is True
    found = store.get_subscription(sub_id)
    assert found is not None
    (invoice,) = store.close_due_cycles(now=found.period_end + timedelta(seconds=1))
    assert invoice.status == "paid"
    assert (after := store.get_subscription(sub_id)) is not None and after.status == "canceled", (
        "ended with its period"
    )
    assert store.close_due_cycles(now=found.period_end + timedelta(days=90)) == []


def test_the_python_client_covers_the_stripe_endpoints(setup: Setup) -> None:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(setup.http.app, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    customer, sub = subscribe(setup)
    card = setup.fake.add_card(setup.store.get_stripe_customer(customer))
    with BillingClient(f"http://127.0.0.1:{port}", setup.admin["Authorization"].split()[1], retries=0) as c:
        assert c.change_plan(sub, "plan_team").plan_id == "plan_team"
        assert c.cancel_subscription(sub, at_period_end=True).cancel_at_period_end is True
        assert c.portal_session(customer).startswith("https://billing.stripe.test/")
        assert c.setup_intent(customer)["status"] == "requires_payment_method"
        c.set_default_payment_method(customer, card)
        assert c.payment_methods(customer).default_payment_method == card
        assert c.upcoming_invoice(customer, sub).amount_due == Decimal("29")
        c.detach_payment_method(customer, card)
        assert c.payment_methods(customer).data == []
        with pytest.raises(ClientNotFound):
            c.detach_payment_method(customer, "pm_missing")
    server.should_exit = True
    thread.join(10)


def deliver_signed(s: Setup, *events: dict[str, Any]) -> None:
    for evt in events:
        payload = body(evt)
        answer = s.http.post(
            "/api/v1/stripe/webhook", content=payload, headers={"Stripe-Signature": sign(payload)}
        )
        assert answer.status_code == 200
    StripeWorker(s.store, s.runtime.settings, s.runtime.gateway).drain()


def test_with_a_key_ambiguous_order_and_missing_objects_are_fetched_from_stripe(setup: Setup) -> None:
    _, sub = subscribe(setup)
    setup.fake.events.clear()
    truth = setup.fake.subscriptions[sub]
    truth["status"] = "past_due"  # what Stripe holds now
    second = T0 + 500
    deliver_signed(
        setup, event("customer.subscription.updated", json.loads(json.dumps(truth)), created=second)
    )
    stale_copy = json.loads(json.dumps(truth)) | {"status": "active"}
    deliver_signed(setup, event("customer.subscription.updated", stale_copy, created=second))  # same second
    found = setup.store.get_subscription(sub)
    assert found is not None and found.status == "past_due", "Stripe's current state, not the later arrival"
    history = [msgspec.json.decode(p) for _, p in setup.store.list_events(limit=1000)]
    outcomes = [e["data"]["outcome"] for e in history if e["event_type"] == "stripe.event_processed"]
    assert outcomes[-1].endswith("(state fetched from Stripe)")
    # An invoice of a subscription billing never heard of: fetched, then the invoice applied.
    other = setup.fake._new_subscription({"customer": truth["customer"], "items": [{"price": "price_team"}]})
    deliver_signed(
        setup, event("invoice.paid", invoice("in_1Fetch", other["id"], truth["customer"]), created=second + 1)
    )
    fetched = setup.store.get_subscription(other["id"])
    assert fetched is not None and fetched.plan_id == "plan_team"
    assert [i.status for i in setup.store.list_invoices() if i.id == "in_1Fetch"] == ["paid"]
