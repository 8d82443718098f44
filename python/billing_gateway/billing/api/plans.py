"""``/plans``: shared by every customer."""

from __future__ import annotations

from typing import Any

from litestar import Response, get, post
from litestar.params import JSONBody, RawBody

from billing_gateway.billing.wire import Plan, PlanIn

from .auth import need, unbound
from .common import Req, Store, Who, idempotent, micros, plan_out

__all__ = ["HANDLERS"]


@get("/plans", sync_to_thread=True)
def list_plans(store: Store, who: Who) -> list[Plan]:
    need(who, "billing:plans:read")
    return [plan_out(p) for p in store.list_plans()]


@post("/plans", status_code=201, sync_to_thread=True)
def create_plan(request: Req, body: RawBody, store: Store, who: Who, data: JSONBody[PlanIn]) -> Response[Any]:
    need(who, "billing:plans:write")
    unbound(who, "create plans: plans are shared by every customer")
    budget, price = micros(data.included_budget, "included_budget"), micros(data.price, "price")
    assert budget is not None and price is not None
    return idempotent(
        store, request, body, who, 201,
        lambda _: plan_out(store.create_plan(
            name=data.name, currency=data.currency, included_budget=budget, price=price,
            interval_days=data.interval_days, product_name=data.product_name, plan_id=data.id,
            stripe_price_id=data.stripe_price_id,
        )),
    )  # fmt: skip


HANDLERS = [list_plans, create_plan]
