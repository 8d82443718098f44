"""``/subscriptions``."""

from __future__ import annotations

from typing import Any

from litestar import Response, get, patch, post
from litestar.params import JSONBody, RawBody

from billing_gateway.billing.domain import Conflict, NotFound
from billing_gateway.billing.store import BillingStore, Principal, SubscriptionRow
from billing_gateway.billing.stripe import subscriptions as via_stripe
from billing_gateway.billing.wire import (
    CancelIn,
    PlanChangeIn,
    Subscription,
    SubscriptionIn,
    SubscriptionPatch,
)

from .auth import need, visible
from .common import PathId, Req, Store, Who, idempotent, micros, stripe_key, subscription_out
from .webhook import Stripe

__all__ = ["HANDLERS", "owned_subscription"]


def owned_subscription(store: BillingStore, who: Principal, subscription_id: str) -> SubscriptionRow:
    found = store.get_subscription(subscription_id)
    if found is None:
        raise NotFound(f"subscription {subscription_id} not found")
    visible(who, found.customer_id, f"subscription {subscription_id}")
    return found


@post("/subscriptions", status_code=201, sync_to_thread=True)
def create_subscription(
    request: Req, body: RawBody, store: Store, stripe: Stripe, who: Who, data: JSONBody[SubscriptionIn]
) -> Response[Any]:
    """Created in Stripe first when Stripe is configured and the plan has a Stripe price
    (the subscription then takes Stripe's id); by billing alone otherwise."""
    need(who, "billing:subscriptions:create")
    visible(who, data.customer_id, f"customer {data.customer_id}")
    budget = micros(data.total_budget, "total_budget")
    key = stripe_key(request, who, "subscription")
    found = via_stripe.create(store, stripe, data.customer_id, data.plan_id, data.trial_days, key)
    if found is not None:
        if budget is not None:
            found = store.update_subscription(found.id, total_budget=budget, correlation_id=key)
        return Response(subscription_out(found), status_code=201)
    return idempotent(
        store, request, body, who, 201,
        lambda key: subscription_out(store.create_subscription(
            data.customer_id, data.plan_id, total_budget=budget, trial_days=data.trial_days,
            correlation_id=key,
        )),
    )  # fmt: skip


@get("/subscriptions/{subscription_id:str}", sync_to_thread=True)
def get_subscription(store: Store, who: Who, subscription_id: PathId) -> Subscription:
    need(who, "billing:subscriptions:read")
    return subscription_out(owned_subscription(store, who, subscription_id))


@patch("/subscriptions/{subscription_id:str}", sync_to_thread=True)
def update_subscription(
    request: Req,
    store: Store,
    stripe: Stripe,
    who: Who,
    subscription_id: PathId,
    data: JSONBody[SubscriptionPatch],
) -> Subscription:
    """A plan, budget or status change; a canceled subscription refuses them all (409). For
    a subscription Stripe drives, a plan change or a cancellation goes to Stripe first, and
    other statuses are Stripe's to set (409)."""
    need(who, "billing:subscriptions:update")
    sub = owned_subscription(store, who, subscription_id)
    if via_stripe.drives(stripe, sub) and (data.plan_id is not None or data.status is not None):
        if data.status not in (None, "canceled"):
            raise Conflict(f"subscription {subscription_id}: its status follows Stripe")
        key = stripe_key(request, who, "patch")
        if data.plan_id is not None:
            sub = via_stripe.change_plan(store, stripe, sub, data.plan_id, False, key)
        if data.status == "canceled":
            sub = via_stripe.cancel(store, stripe, sub, False, key)
        if data.total_budget is None:
            return subscription_out(sub)
    updated = store.update_subscription(
        subscription_id,
        plan_id=data.plan_id,
        total_budget=micros(data.total_budget, "total_budget"),
        status=data.status,
    )
    return subscription_out(updated)


@post("/subscriptions/{subscription_id:str}/change-plan", status_code=200, sync_to_thread=True)
def change_plan(
    request: Req,
    store: Store,
    stripe: Stripe,
    who: Who,
    subscription_id: PathId,
    data: JSONBody[PlanChangeIn],
) -> Subscription:
    """The plan changed now (prorated as configured), or at the end of the period (Stripe
    only: a subscription schedule; 409 without Stripe)."""
    need(who, "billing:subscriptions:update")
    sub = owned_subscription(store, who, subscription_id)
    key = stripe_key(request, who, "change-plan")
    return subscription_out(via_stripe.change_plan(store, stripe, sub, data.plan_id, data.at_period_end, key))


@post("/subscriptions/{subscription_id:str}/cancel", status_code=200, sync_to_thread=True)
def cancel_subscription(
    request: Req, store: Store, stripe: Stripe, who: Who, subscription_id: PathId, data: JSONBody[CancelIn]
) -> Subscription:
    """Canceled now, or at the end of the period (``cancel_at_period_end``)."""
    need(who, "billing:subscriptions:update")
    sub = owned_subscription(store, who, subscription_id)
    key = stripe_key(request, who, "cancel")
    return subscription_out(via_stripe.cancel(store, stripe, sub, data.at_period_end, key))


HANDLERS = [create_subscription, get_subscription, update_subscription, change_plan, cancel_subscription]
