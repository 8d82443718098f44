"""Subscription changes requested through billing's API when Stripe drives billing: they
go to Stripe first (with an idempotency key), and the local state follows from Stripe's
answer at once, then from the webhooks (which change nothing more when they agree).
Without ``STRIPE_SECRET_KEY``, or for a subscription Stripe does not drive, billing
changes its own state as always."""

from __future__ import annotations

from typing import Any

from billing_gateway.billing.domain import Conflict, Invalid, NotFound, require_live
from billing_gateway.billing.store import BillingStore, SubscriptionRow

from .objects import Subscription, decode_object
from .runtime import StripeRuntime

__all__ = ["cancel", "change_plan", "create", "drives"]


def drives(stripe: StripeRuntime, sub: SubscriptionRow) -> bool:
    """Whether Stripe drives ``sub`` (and billing can reach Stripe)."""
    return stripe.gateway is not None and sub.stripe_subscription_id is not None


def _price(store: BillingStore, stripe: StripeRuntime, plan_id: str) -> str:
    price = stripe.settings.price_for(plan_id) or store.get_plan(plan_id).stripe_price_id
    if price is None:
        raise Invalid(
            f"plan_id: plan {plan_id} has no Stripe price (STRIPE_PRODUCT_PRICE_MAP or stripe_price_id)"
        )
    return price


def _follow(store: BillingStore, stripe: StripeRuntime, found: dict[str, Any], key: str) -> SubscriptionRow:
    """The local subscription brought to Stripe's answer."""
    answer: Subscription = decode_object(Subscription, found)
    with store.transaction() as conn:
        store.apply_stripe_subscription(conn, answer, stripe.settings.price_map, key)
        sub = store.stripe_subscription(conn, answer.id)
    assert sub is not None
    return sub


def create(
    store: BillingStore, stripe: StripeRuntime, customer_id: str, plan_id: str, trial_days: int, key: str
) -> SubscriptionRow | None:
    """A subscription created in Stripe (and its customer, the first time), or None when the
    plan is not sold through Stripe (billing creates it itself)."""
    if stripe.gateway is None:
        return None
    price = stripe.settings.price_for(plan_id) or store.get_plan(plan_id).stripe_price_id
    if price is None:
        return None
    customer = store.get_customer(customer_id)
    if customer is None:
        raise NotFound(f"customer {customer_id} not found")
    stripe_customer = stripe.gateway.ensure_customer(
        customer.id, customer.name, customer.email, customer.stripe_customer_id
    )
    if customer.stripe_customer_id is None:
        store.link_stripe_customer(customer.id, stripe_customer)
    found = stripe.gateway.create_subscription(stripe_customer, price, customer.id, trial_days, key)
    return _follow(store, stripe, found, key)


def change_plan(
    store: BillingStore,
    stripe: StripeRuntime,
    sub: SubscriptionRow,
    plan_id: str,
    at_period_end: bool,
    key: str,
) -> SubscriptionRow:
    """Now (prorated as configured) or from the next period on."""
    require_live(sub.id, sub.status)
    if not drives(stripe, sub):
        if at_period_end:
            raise Conflict(f"subscription {sub.id}: a plan change at the period's end needs Stripe")
        return store.update_subscription(sub.id, plan_id=plan_id, correlation_id=key)
    assert stripe.gateway is not None and sub.stripe_subscription_id is not None
    found = stripe.gateway.change_plan(
        sub.stripe_subscription_id, _price(store, stripe, plan_id), at_period_end, key
    )
    return sub if at_period_end else _follow(store, stripe, found, key)


def cancel(
    store: BillingStore, stripe: StripeRuntime, sub: SubscriptionRow, at_period_end: bool, key: str
) -> SubscriptionRow:
    """Now, or at the end of the period (billing's own cycle cancels it then)."""
    require_live(sub.id, sub.status)
    if not drives(stripe, sub):
        if at_period_end:
            return store.cancel_at_period_end(sub.id)
        return store.update_subscription(sub.id, status="canceled", correlation_id=key)
    assert stripe.gateway is not None and sub.stripe_subscription_id is not None
    return _follow(store, stripe, stripe.gateway.cancel(sub.stripe_subscription_id, at_period_end, key), key)
