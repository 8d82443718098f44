"""``/subscriptions``."""

from __future__ import annotations

from typing import Any

from litestar import Response, get, patch, post
from litestar.params import JSONBody, RawBody

from billing_gateway.billing.domain import NotFound
from billing_gateway.billing.store import BillingStore, Principal, SubscriptionRow
from billing_gateway.billing.wire import Subscription, SubscriptionIn, SubscriptionPatch

from .auth import need, visible
from .common import PathId, Req, Store, Who, idempotent, micros, subscription_out

__all__ = ["HANDLERS", "owned_subscription"]


def owned_subscription(store: BillingStore, who: Principal, subscription_id: str) -> SubscriptionRow:
    found = store.get_subscription(subscription_id)
    if found is None:
        raise NotFound(f"subscription {subscription_id} not found")
    visible(who, found.customer_id, f"subscription {subscription_id}")
    return found


@post("/subscriptions", status_code=201, sync_to_thread=True)
def create_subscription(
    request: Req, body: RawBody, store: Store, who: Who, data: JSONBody[SubscriptionIn]
) -> Response[Any]:
    need(who, "billing:subscriptions:create")
    visible(who, data.customer_id, f"customer {data.customer_id}")
    budget = micros(data.total_budget, "total_budget")
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
    store: Store, who: Who, subscription_id: PathId, data: JSONBody[SubscriptionPatch]
) -> Subscription:
    """A plan, budget or status change; a canceled subscription refuses them all (409)."""
    need(who, "billing:subscriptions:update")
    owned_subscription(store, who, subscription_id)
    updated = store.update_subscription(
        subscription_id,
        plan_id=data.plan_id,
        total_budget=micros(data.total_budget, "total_budget"),
        status=data.status,
    )
    return subscription_out(updated)


HANDLERS = [create_subscription, get_subscription, update_subscription]
