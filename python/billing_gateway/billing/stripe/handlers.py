"""One handler per Stripe event type, applied inside the transaction that marks the event
processed (so an event is applied exactly once, or not at all).

Handled: ``customer.created|updated|deleted``, ``customer.subscription.created|updated|
deleted|paused|resumed``, ``invoice.finalized``, ``invoice.paid``,
``invoice.payment_failed``. Any other type is stored and ``ignored``.

Order: an event older (by ``created``) than the newest applied to its object changes
nothing; one from the same second as the newest applied is ambiguous (``created`` has
one-second resolution): with a payment gateway the object is fetched from Stripe and its
current state applied, without one the event is applied as it came.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from billing_gateway.billing.store import BillingStore
from billing_gateway.billing.store.stripe_sync import InvoiceKind

from .objects import Customer, Event, Invoice, Subscription, decode_object

__all__ = ["HANDLED", "Ambiguous", "Applied", "adopt", "apply", "object_kind"]

Apply = Callable[[BillingStore, Connection, dict[str, Any], Mapping[str, str], str], tuple[str, str | None]]


class Ambiguous(Exception):
    """Two events of one object in the same second: fetch the object to know its state."""

    def __init__(self, kind: str, object_id: str) -> None:
        super().__init__(f"{kind} {object_id}: two events in the same second")
        self.kind = kind
        self.object_id = object_id


@dataclass(frozen=True)
class Applied:
    status: str
    """``processed`` or ``ignored`` (the inbox's status)."""
    outcome: str
    """What it did, in words (the audit trail's)."""
    customer_id: str | None = None


def _customer(deleted: bool = False) -> Apply:
    def run(
        store: BillingStore, conn: Connection, found: dict[str, Any], _: Mapping[str, str], key: str
    ) -> tuple[str, str | None]:
        customer: Customer = decode_object(Customer, found)
        if deleted:
            customer.deleted = True
        return store.apply_stripe_customer(conn, customer, key)

    return run


def _subscription(deleted: bool = False) -> Apply:
    def run(
        store: BillingStore, conn: Connection, found: dict[str, Any], prices: Mapping[str, str], key: str
    ) -> tuple[str, str | None]:
        sub: Subscription = decode_object(Subscription, found)
        return store.apply_stripe_subscription(conn, sub, prices, key, deleted=deleted)

    return run


def _invoice(kind: InvoiceKind) -> Apply:
    def run(
        store: BillingStore, conn: Connection, found: dict[str, Any], _: Mapping[str, str], key: str
    ) -> tuple[str, str | None]:
        invoice: Invoice = decode_object(Invoice, found)
        return store.apply_stripe_invoice(conn, invoice, kind, key)

    return run


HANDLED: dict[str, Apply] = {
    "customer.created": _customer(),
    "customer.updated": _customer(),
    "customer.deleted": _customer(deleted=True),
    "customer.subscription.created": _subscription(),
    "customer.subscription.updated": _subscription(),
    "customer.subscription.paused": _subscription(),
    "customer.subscription.resumed": _subscription(),
    "customer.subscription.deleted": _subscription(deleted=True),
    "invoice.finalized": _invoice("finalized"),
    "invoice.paid": _invoice("paid"),
    "invoice.payment_failed": _invoice("payment_failed"),
}


def adopt(
    store: BillingStore,
    conn: Connection,
    kind: str,
    found: dict[str, Any],
    prices: Mapping[str, str],
    key: str,
) -> None:
    """Applies a customer or subscription fetched from Stripe because an event referred to
    it before its own events arrived."""
    handler = HANDLED["customer.created" if kind == "customer" else "customer.subscription.updated"]
    handler(store, conn, found, prices, key)


def object_kind(event_type: str) -> str:
    """The kind of object an event carries: ``customer``, ``subscription`` or ``invoice``."""
    if event_type.startswith("customer.subscription."):
        return "subscription"
    return event_type.partition(".")[0]


def apply(
    store: BillingStore,
    conn: Connection,
    event: Event,
    prices: Mapping[str, str],
    *,
    can_fetch: bool = False,
    fetched: dict[str, Any] | None = None,
) -> Applied:
    """Applies ``event`` (or ``fetched``, its object as Stripe has it now) in ``conn``.
    Raises :class:`Ambiguous` when the order is ambiguous and ``can_fetch``."""
    handler = HANDLED.get(event.type)
    if handler is None:
        return Applied("ignored", f"ignored: billing does not handle {event.type}")
    object_id = event.object_id
    if object_id is None:
        return Applied("ignored", "ignored: the event carries no object id")
    order = store.order(conn, object_id, event.created, event.id)
    if order == "stale":
        return Applied("processed", "stale: older than what billing holds for the object; nothing changed")
    if order == "tie" and fetched is None and can_fetch:
        raise Ambiguous(object_kind(event.type), object_id)
    outcome, customer_id = handler(store, conn, fetched or event.data.object, prices, event.id)
    store.applied(conn, object_id, event.created, event.id)
    if fetched is not None:
        outcome += " (state fetched from Stripe)"
    return Applied("processed", outcome, customer_id)
