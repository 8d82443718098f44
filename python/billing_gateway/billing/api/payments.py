"""A customer's payments, through the payment processor (Stripe; a 409 without
``STRIPE_SECRET_KEY``): billing-portal sessions, setup intents, payment methods (listed,
made default, detached) and the upcoming invoice's preview. Scoped like the rest: a
customer-bound key sees only its customer, and another customer's payment method is a 404."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from litestar import delete, get, post
from litestar.params import Body

from billing_gateway.billing.domain import Invalid, NotFound
from billing_gateway.billing.store import BillingStore, Principal
from billing_gateway.billing.stripe.objects import to_micros
from billing_gateway.billing.wire import PaymentMethods, Portal, PortalIn, PreviewLine, UpcomingInvoice
from billing_gateway.money import from_micros

from .auth import need, visible
from .common import PathId, QueryId, Req, Store, Who, stripe_key
from .subscriptions import owned_subscription
from .webhook import Stripe

__all__ = ["HANDLERS"]


def _stripe_customer(store: BillingStore, who: Principal, customer_id: str, scope: str) -> str:
    need(who, scope)
    visible(who, customer_id, f"customer {customer_id}")
    return store.get_stripe_customer(customer_id)


@post("/customers/{customer_id:str}/portal-session", status_code=201, sync_to_thread=True)
def portal_session(
    store: Store,
    stripe: Stripe,
    who: Who,
    customer_id: PathId,
    data: Annotated[PortalIn | None, Body()] = None,
) -> Portal:
    """A Stripe billing-portal session: its URL."""
    customer = _stripe_customer(store, who, customer_id, "billing:payments:write")
    gateway = stripe.require_gateway()
    return_url = (data.return_url if data else None) or stripe.settings.portal_return_url
    if return_url is None:
        raise Invalid("return_url: required (or set STRIPE_PORTAL_RETURN_URL)")
    return Portal(gateway.portal_session(customer, return_url))


@post("/customers/{customer_id:str}/setup-intents", status_code=201, sync_to_thread=True)
def setup_intent(request: Req, store: Store, stripe: Stripe, who: Who, customer_id: PathId) -> dict[str, Any]:
    """A setup intent for a new payment method: its id and client secret."""
    customer = _stripe_customer(store, who, customer_id, "billing:payments:write")
    return stripe.require_gateway().setup_intent(customer, stripe_key(request, who, "setup-intent"))


@get("/customers/{customer_id:str}/payment-methods", sync_to_thread=True)
def payment_methods(store: Store, stripe: Stripe, who: Who, customer_id: PathId) -> PaymentMethods:
    customer = _stripe_customer(store, who, customer_id, "billing:payments:read")
    found, default = stripe.require_gateway().payment_methods(customer)
    return PaymentMethods(found, default)


@post(
    "/customers/{customer_id:str}/payment-methods/{payment_method_id:str}/default",
    status_code=200,
    sync_to_thread=True,
)
def default_payment_method(
    store: Store, stripe: Stripe, who: Who, customer_id: PathId, payment_method_id: PathId
) -> dict[str, str]:
    customer = _stripe_customer(store, who, customer_id, "billing:payments:write")
    stripe.require_gateway().set_default_payment_method(customer, payment_method_id)
    return {"default_payment_method": payment_method_id}


@delete(
    "/customers/{customer_id:str}/payment-methods/{payment_method_id:str}",
    status_code=204,
    sync_to_thread=True,
)
def detach_payment_method(
    store: Store, stripe: Stripe, who: Who, customer_id: PathId, payment_method_id: PathId
) -> None:
    customer = _stripe_customer(store, who, customer_id, "billing:payments:write")
    stripe.require_gateway().detach_payment_method(customer, payment_method_id)


@get("/customers/{customer_id:str}/upcoming-invoice", sync_to_thread=True)
def upcoming_invoice(
    store: Store, stripe: Stripe, who: Who, customer_id: PathId, subscription_id: QueryId = None
) -> UpcomingInvoice:
    """Stripe's preview of the customer's next invoice (of one subscription, if named)."""
    customer = _stripe_customer(store, who, customer_id, "billing:payments:read")
    stripe_sub = None
    if subscription_id is not None:
        sub = owned_subscription(store, who, subscription_id)
        if sub.customer_id != customer_id:
            raise NotFound(f"subscription {subscription_id} not found")
        stripe_sub = sub.stripe_subscription_id
    found = stripe.require_gateway().preview_invoice(customer, stripe_sub)
    currency = str(found.get("currency", "usd"))

    def money(amount: Any) -> Decimal:
        return from_micros(to_micros(int(amount or 0), currency))

    attempt = found.get("next_payment_attempt")
    lines = [
        PreviewLine(line.get("description"), money(line.get("amount")))
        for line in (found.get("lines") or {}).get("data", [])
    ]
    return UpcomingInvoice(
        customer_id=customer_id, currency=currency.upper(), amount_due=money(found.get("amount_due")),
        total=money(found.get("total")), lines=lines,
        next_payment_attempt=datetime.fromtimestamp(attempt, UTC) if isinstance(attempt, int) else None,
    )  # fmt: skip


HANDLERS = [
    portal_session,
    setup_intent,
    payment_methods,
    default_payment_method,
    detach_payment_method,
    upcoming_invoice,
]
