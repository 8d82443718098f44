"""``/customers``."""

from __future__ import annotations

from typing import Any

from litestar import Response, get, post
from litestar.params import JSONBody, RawBody

from billing_gateway.billing.domain import NotFound
from billing_gateway.billing.wire import Customer, CustomerIn

from .auth import need, unbound, visible
from .common import PathId, Req, Store, Who, idempotent, out

__all__ = ["HANDLERS"]


@post("/customers", status_code=201, sync_to_thread=True)
def create_customer(
    request: Req, body: RawBody, store: Store, who: Who, data: JSONBody[CustomerIn]
) -> Response[Any]:
    need(who, "billing:customers:create")
    unbound(who, "create customers")
    return idempotent(
        store, request, body, who, 201,
        lambda key: out(Customer, store.create_customer(data.name, data.email, data.stripe_customer_id, key)),
    )  # fmt: skip


@get("/customers/{customer_id:str}", sync_to_thread=True)
def get_customer(store: Store, who: Who, customer_id: PathId) -> Customer:
    need(who, "billing:customers:read")
    visible(who, customer_id, f"customer {customer_id}")
    found = store.get_customer(customer_id)
    if found is None:
        raise NotFound(f"customer {customer_id} not found")
    return out(Customer, found)


HANDLERS = [create_customer, get_customer]
