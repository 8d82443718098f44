"""``/invoices``: listed, paid, failed, voided."""

from __future__ import annotations

from typing import Any

from litestar import Response, get, post
from litestar.params import RawBody

from billing_gateway.billing.domain import NotFound
from billing_gateway.billing.store import BillingStore, Principal
from billing_gateway.billing.wire import Invoice

from .auth import need, visible
from .common import PathId, QueryId, Req, Store, Who, idempotent, invoice_out

__all__ = ["HANDLERS"]


def _owned_invoice(store: BillingStore, who: Principal, invoice_id: str) -> None:
    found = store.find_invoice(invoice_id)
    if found is None:
        raise NotFound(f"invoice {invoice_id} not found")
    visible(who, found.customer_id, f"invoice {invoice_id}")


@get("/invoices", sync_to_thread=True)
def list_invoices(store: Store, who: Who, customer_id: QueryId = None) -> list[Invoice]:
    need(who, "billing:invoices:read")
    if who.customer_id is not None:
        visible(who, customer_id or who.customer_id, f"customer {customer_id}")
        customer_id = who.customer_id
    return [invoice_out(i) for i in store.list_invoices(customer_id)]


@post("/invoices/{invoice_id:str}/pay", status_code=200, sync_to_thread=True)
def pay_invoice(request: Req, body: RawBody, store: Store, who: Who, invoice_id: PathId) -> Response[Any]:
    """Records the payment and opens the next period. The last invoice of a canceled
    subscription can still be paid; that never revives the subscription."""
    need(who, "billing:invoices:write")
    _owned_invoice(store, who, invoice_id)
    return idempotent(
        store, request, body, who, 200, lambda key: invoice_out(store.pay_invoice(invoice_id, key))
    )


@post("/invoices/{invoice_id:str}/payment-failed", status_code=200, sync_to_thread=True)
def payment_failed(request: Req, body: RawBody, store: Store, who: Who, invoice_id: PathId) -> Response[Any]:
    """Records a failed payment attempt: the subscription becomes past_due (409 when it is
    canceled)."""
    need(who, "billing:invoices:write")
    _owned_invoice(store, who, invoice_id)
    return idempotent(
        store, request, body, who, 200, lambda key: invoice_out(store.fail_payment(invoice_id, key))
    )


@post("/invoices/{invoice_id:str}/void", status_code=200, sync_to_thread=True)
def void_invoice(request: Req, body: RawBody, store: Store, who: Who, invoice_id: PathId) -> Response[Any]:
    need(who, "billing:invoices:write")
    _owned_invoice(store, who, invoice_id)
    return idempotent(store, request, body, who, 200, lambda _: invoice_out(store.void_invoice(invoice_id)))


HANDLERS = [list_invoices, pay_invoice, payment_failed, void_invoice]
