"""``StripeGateway`` (the stripe library's ``StripeClient``) against a local stateful Stripe
through the library's base-URL setting: each operation, the idempotency keys it passes,
and each error mapped to the answer billing gives."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from billing_gateway.billing.domain import NotFound
from billing_gateway.billing.stripe.gateway import PaymentError, StripeGateway
from billing_gateway.billing.stripe.settings import StripeSettings

from .stripe_fake import API_KEY, DECLINING_CARD, FakeStripe, running
from .stripe_payloads import T0


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with running(T0) as f:
        yield f


def gateway(fake: FakeStripe, key: str = API_KEY, **settings: str) -> StripeGateway:
    return StripeGateway(StripeSettings(secret_key=key, api_base=fake.url, **settings), max_network_retries=0)


def test_customers_are_created_once_per_tenant(fake: FakeStripe) -> None:
    gw = gateway(fake)
    first = gw.ensure_customer("tenant_1", "Acme", "a@acme.test", None)
    assert gw.ensure_customer("tenant_1", "Acme", "a@acme.test", None) == first, "the idempotency key replays"
    assert len(fake.customers) == 1 and fake.customers[first]["metadata"] == {"tenant_id": "tenant_1"}
    assert gw.ensure_customer("tenant_1", "Acme", "a@acme.test", "cus_known") == "cus_known"
    assert fake.requests[0][3] == "bg-customer-tenant_1"


def test_subscriptions_are_created_changed_and_canceled(fake: FakeStripe) -> None:
    gw = gateway(fake, proration_behavior="always_invoice")
    cus = gw.ensure_customer("tenant_2", "B", "", None)
    sub = gw.create_subscription(cus, "price_pro", "tenant_2", 14, "key-create")
    assert sub["status"] == "trialing" and sub["metadata"] == {"tenant_id": "tenant_2"}
    assert fake.requests[-1][2]["proration_behavior"] == "always_invoice"
    assert fake.requests[-1][3] == "key-create"
    changed = gw.change_plan(sub["id"], "price_team", False, "key-change")
    assert changed["items"]["data"][0]["price"]["id"] == "price_team"
    later = gw.change_plan(sub["id"], "price_pro", True, "key-later")
    assert later["items"]["data"][0]["price"]["id"] == "price_team", "nothing changes before the period ends"
    (schedule,) = fake.schedules.values()
    assert [p["items"][0]["price"] for p in schedule["phases"]] == ["price_team", "price_pro"]
    assert gw.cancel(sub["id"], True, "key-cancel-later")["cancel_at_period_end"] is True
    assert gw.cancel(sub["id"], False, "key-cancel")["status"] == "canceled"
    assert gw.retrieve("subscription", sub["id"])["status"] == "canceled"
    assert [e["type"] for e in fake.events][-2:] == [
        "customer.subscription.updated",
        "customer.subscription.deleted",
    ]


def test_usage_portal_setup_intents_and_payment_methods(fake: FakeStripe) -> None:
    gw = gateway(fake)
    cus = gw.ensure_customer("tenant_3", "C", "", None)
    gw.report_usage(cus, "llm_tokens", 1234, "usage-1")
    gw.report_usage(cus, "llm_tokens", 1234, "usage-1")
    assert len(fake.meter_events) == 1 and fake.meter_events["usage-1"]["payload"]["value"] == "1234"
    assert gw.portal_session(cus, "https://app.test/billing").startswith("https://billing.stripe.test/")
    intent = gw.setup_intent(cus, "key-si")
    assert intent["client_secret"].startswith(intent["id"]) and intent["status"] == "requires_payment_method"
    mine, theirs = fake.add_card(cus), fake.add_card("cus_someone_else")
    gw.set_default_payment_method(cus, mine)
    methods, default = gw.payment_methods(cus)
    assert [m["id"] for m in methods] == [mine] and default == mine
    for foreign in (theirs, "pm_missing"):
        with pytest.raises((NotFound, PaymentError)) as refused:
            gw.set_default_payment_method(cus, foreign)
        assert refused.value.status_code == 404
        with pytest.raises((NotFound, PaymentError)):
            gw.detach_payment_method(cus, foreign)
    assert fake.payment_methods[theirs]["customer"] == "cus_someone_else", "another customer's card untouched"
    gw.detach_payment_method(cus, mine)
    assert gw.payment_methods(cus)[0] == []
    gw.create_subscription(cus, "price_pro", "tenant_3", 0, "key-s")
    preview = gw.preview_invoice(cus, None)
    assert (preview["amount_due"], preview["currency"]) == (2900, "usd")


@pytest.mark.parametrize(
    ("status", "kind", "code", "expected"),
    [
        (402, "card_error", "card_declined", 402),
        (400, "invalid_request_error", "parameter_invalid_integer", 400),
        (404, "invalid_request_error", "resource_missing", 404),
        (429, "invalid_request_error", "rate_limit", 503),
        (500, "api_error", None, 502),
        (403, "invalid_request_error", "secret_key_required", 502),
    ],
)
def test_stripe_errors_map_to_clear_answers(
    fake: FakeStripe, status: int, kind: str, code: str | None, expected: int
) -> None:
    gw = gateway(fake)
    fake.fail_next(status, kind, f"Stripe says {status}", code)
    with pytest.raises(PaymentError) as failed:
        gw.ensure_customer("tenant_e", "E", "", None)
    assert failed.value.status_code == expected
    assert f"Stripe says {status}" in str(failed.value)
    assert gw.metrics.api_errors[failed.value.code] == 1


def test_real_refusals_map_too(fake: FakeStripe) -> None:
    gw = gateway(fake)
    cus = gw.ensure_customer("tenant_r", "R", "", None)
    with pytest.raises(PaymentError, match=r"parameter items\[0\]\[price\]") as unknown_price:
        gw.create_subscription(cus, "price_nope", "tenant_r", 0, "k1")
    assert (unknown_price.value.status_code, unknown_price.value.code) == (400, "resource_missing")
    fake.customers[cus]["invoice_settings"]["default_payment_method"] = DECLINING_CARD
    with pytest.raises(PaymentError, match="card_declined") as declined:
        gw.create_subscription(cus, "price_pro", "tenant_r", 0, "k2")
    assert declined.value.status_code == 402
    with pytest.raises(PaymentError) as reused:
        gw.create_subscription(cus, "price_team", "tenant_r", 0, "k2")
    assert reused.value.status_code == 409, "an idempotency key reused with another request"
    with pytest.raises(PaymentError) as gone:
        gw.retrieve("customer", "cus_missing")
    assert gone.value.status_code == 404
    with pytest.raises(PaymentError, match="STRIPE_SECRET_KEY") as bad_key:
        gateway(fake, key="sk_test_wrong").ensure_customer("t", "T", "", None)
    assert bad_key.value.status_code == 502


def test_an_unreachable_stripe_is_a_503() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    gw = StripeGateway(
        StripeSettings(secret_key=API_KEY, api_base=f"http://127.0.0.1:{port}"), max_network_retries=0
    )
    with pytest.raises(PaymentError, match="unreachable") as down:
        gw.ensure_customer("t", "T", "", None)
    assert down.value.status_code == 503
