"""Stripe's customers, subscriptions and invoices applied to billing's, each inside the
transaction of the Stripe event that carries it, writing the usual outbox events.

Arrival order is never trusted: :meth:`StripeSync.order` compares an event's ``created``
with the newest one applied to the same Stripe object. A subscription's status changes
only through billing's transition table (``canceled`` is terminal); its period only moves
forward. Stripe drives the period: when it opens the next one (the subscription's current
period moves, or an invoice for a later period is paid) billing opens it too, with
``invoice.paid`` for the gateways (which renew the budget), as its own cycle would; whether
the renewal is paid shows in the status (``past_due``), which Stripe sets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billing_gateway import events
from billing_gateway.billing.domain import Conflict, Invalid, NotFound, SubscriptionStatus, may_become
from billing_gateway.billing.schema import (
    customers,
    invoices,
    payments,
    plans,
    stripe_objects,
    subscriptions,
)
from billing_gateway.billing.stripe.objects import (
    Customer,
    Invoice,
    Subscription,
    SubscriptionItem,
    billing_status,
)
from billing_gateway.billing.wire import ID_PATTERN, MAX_ID
from billing_gateway.money import from_micros

from .base import insert_new, load, new_id
from .customers import Customers
from .cycles import Cycles
from .outbox import envelope
from .records import PlanRow, SubscriptionRow

__all__ = ["InvoiceKind", "NotYet", "Order", "StripeSync"]

Order = Literal["newer", "stale", "tie"]
InvoiceKind = Literal["finalized", "paid", "payment_failed"]


class NotYet(Exception):
    """The event refers to a Stripe object billing has not seen yet: retry it later (the
    object's own event is on its way), or fetch the object from Stripe."""

    def __init__(self, kind: str, object_id: str) -> None:
        super().__init__(f"{kind} {object_id} is not synced yet")
        self.kind = kind
        self.object_id = object_id


def _valid_id(value: str | None) -> str | None:
    """``value`` if it can be a billing id."""
    return value if value and len(value) <= MAX_ID and re.match(ID_PATTERN, value) else None


class StripeSync(Cycles, Customers):
    # ---- order -------------------------------------------------------------------------

    @staticmethod
    def order(conn: Connection, object_id: str, created: int, event_id: str) -> Order:
        """Where an event stands for its object (whose row it locks until the transaction
        ends): newer than every applied one, older (stale: it changes nothing), or from
        the same second as the newest applied (a tie: ``created`` cannot order them)."""
        o = stripe_objects
        insert_new(conn, o, object_id=object_id, last_created=-1, last_event_id="")
        last, last_id = conn.execute(
            sa.select(o.c.last_created, o.c.last_event_id).where(o.c.object_id == object_id).with_for_update()
        ).one()
        if created < last or event_id == last_id:
            return "stale"
        return "tie" if created == last else "newer"

    @staticmethod
    def applied(conn: Connection, object_id: str, created: int, event_id: str) -> None:
        o = stripe_objects
        conn.execute(
            o.update()
            .where(o.c.object_id == object_id, o.c.last_created <= created)
            .values(last_created=created, last_event_id=event_id)
        )

    # ---- customers ---------------------------------------------------------------------

    def stripe_customer_id(self, conn: Connection, stripe_id: str) -> str | None:
        """The billing customer linked to a Stripe customer."""
        found = conn.execute(sa.select(customers.c.id).where(customers.c.stripe_customer_id == stripe_id))
        return found.scalar()

    def apply_stripe_customer(self, conn: Connection, c: Customer, correlation_id: str) -> tuple[str, str]:
        """``(outcome, billing customer id)``: a Stripe customer created, linked or updated."""
        local = self.stripe_customer_id(conn, c.id)
        if local is not None:
            if c.deleted:
                return "deleted in Stripe (its subscriptions end with their own events)", local
            values = {k: v for k, v in (("name", c.name), ("email", c.email)) if v}
            if values:
                conn.execute(customers.update().where(customers.c.id == local).values(**values))
            return "updated", local
        return "created", self._link_customer(
            conn, c.id, c.metadata.tenant_id, c.name, c.email, correlation_id
        )

    def _link_customer(
        self,
        conn: Connection,
        stripe_id: str,
        tenant_id: str | None,
        name: str | None,
        email: str | None,
        correlation_id: str,
    ) -> str:
        """Links the customer ``metadata.tenant_id`` names, or creates one (with that id
        when it is a valid billing id) — ``customer.created`` for the gateways."""
        tenant = _valid_id(tenant_id)
        if tenant is not None:
            existing = self._find(conn, customers, tenant, lock=True)
            if existing is not None:
                linked = existing["stripe_customer_id"]
                if linked not in (None, stripe_id):
                    raise Conflict(f"customer {tenant} is already linked to Stripe customer {linked}")
                conn.execute(
                    customers.update().where(customers.c.id == tenant).values(stripe_customer_id=stripe_id)
                )
                return tenant
        customer_id = tenant or new_id("cus")
        now = self.clock()
        name, email = name or stripe_id, email or ""
        conn.execute(
            customers.insert().values(
                id=customer_id, name=name, email=email, stripe_customer_id=stripe_id, created_at=now
            )
        )
        event = events.CustomerCreated(
            data=events.CustomerCreatedData(customer_id, name, email, stripe_id),
            **envelope(now, customer_id, correlation_id),
        )
        self._emit(conn, event, customer_id)
        return customer_id

    # ---- subscriptions -----------------------------------------------------------------

    def plan_for_price(self, conn: Connection, price_id: str, price_map: Mapping[str, str]) -> PlanRow | None:
        """The plan billed at a Stripe price: ``STRIPE_PRODUCT_PRICE_MAP`` first, then the
        plans' ``stripe_price_id``."""
        for plan_id, mapped in price_map.items():
            if mapped == price_id:
                return self._plan(conn, plan_id)
        found = conn.execute(sa.select(plans.c.id).where(plans.c.stripe_price_id == price_id)).scalar()
        return None if found is None else self._plan(conn, found)

    def _stripe_plan(
        self, conn: Connection, s: Subscription, price_map: Mapping[str, str]
    ) -> tuple[PlanRow, SubscriptionItem]:
        for item in s.items.data:
            plan = self.plan_for_price(conn, item.price.id, price_map)
            if plan is not None:
                return plan, item
        prices = ", ".join(i.price.id for i in s.items.data) or "none"
        raise Invalid(
            f"subscription {s.id}: no plan for its prices ({prices}); set STRIPE_PRODUCT_PRICE_MAP "
            "or the plan's stripe_price_id"
        )

    def stripe_subscription(
        self, conn: Connection, stripe_id: str, *, lock: bool = False
    ) -> SubscriptionRow | None:
        query = sa.select(subscriptions).where(subscriptions.c.stripe_subscription_id == stripe_id)
        found = conn.execute(query.with_for_update() if lock else query).mappings().first()
        return None if found is None else load(SubscriptionRow, found)

    def apply_stripe_subscription(
        self,
        conn: Connection,
        s: Subscription,
        price_map: Mapping[str, str],
        correlation_id: str,
        *,
        deleted: bool = False,
    ) -> tuple[str, str]:
        """``(outcome, billing customer id)``: the subscription created or brought to
        Stripe's state (plan, status, period, ``cancel_at_period_end``)."""
        status: SubscriptionStatus = "canceled" if deleted else billing_status(s.status)
        plan, item = self._stripe_plan(conn, s, price_map)
        start, end = s.period(item)
        sub = self.stripe_subscription(conn, s.id, lock=True)
        if sub is None:
            customer_id = self.stripe_customer_id(conn, s.customer_id)
            if customer_id is None:  # billing's own subscriptions name their tenant; others wait
                if _valid_id(s.metadata.tenant_id) is None:
                    raise NotYet("customer", s.customer_id)
                customer_id = self._link_customer(
                    conn, s.customer_id, s.metadata.tenant_id, None, None, correlation_id
                )
            return self._create_from_stripe(conn, s, plan, status, start, end, customer_id, correlation_id)
        if sub.status == "canceled":
            return "unchanged: canceled is final", sub.customer_id
        now = self.clock()
        local: dict[str, Any] = {}
        if start > sub.period_start:  # Stripe opened the next period: the budget renews
            local |= {"period_start": start, "period_end": end}
            self._open_period(
                conn, sub, s.latest_invoice_id or f"period_{sub.id}", 0, start, end, correlation_id
            )
        if s.cancel_at_period_end != sub.cancel_at_period_end:
            local["cancel_at_period_end"] = s.cancel_at_period_end
        if local:
            conn.execute(
                subscriptions.update().where(subscriptions.c.id == sub.id).values(**local, updated_at=now)
            )
        changes: dict[str, Any] = {}
        data: dict[str, Any] = {"subscription_id": sub.id, "customer_id": sub.customer_id}
        if plan.id != sub.plan_id:
            changes |= {"plan_id": plan.id, "total_budget": plan.included_budget}
            data |= {
                "new_plan_id": plan.id,
                "new_plan_name": plan.name,
                "new_total_budget": from_micros(plan.included_budget),
            }
        if status != sub.status and may_become(sub.status, status):
            changes["status"] = data["status"] = status
        if changes:
            self._change_subscription(conn, sub, changes, data, correlation_id)
        parts = [*changes, *local]
        return ("updated: " + ", ".join(sorted(parts))) if parts else "unchanged", sub.customer_id

    def _create_from_stripe(
        self,
        conn: Connection,
        s: Subscription,
        plan: PlanRow,
        status: SubscriptionStatus,
        start: datetime,
        end: datetime,
        customer_id: str,
        correlation_id: str,
    ) -> tuple[str, str]:
        sub_id = _valid_id(s.id)
        if sub_id is None:
            raise Invalid(f"subscription {s.id}: not usable as a billing id")
        if self._find(conn, subscriptions, sub_id) is not None:
            raise Conflict(f"subscription {sub_id} exists and is not linked to Stripe")
        now = self.clock()
        sub = SubscriptionRow(
            id=sub_id, customer_id=customer_id, plan_id=plan.id, status=status,
            total_budget=plan.included_budget,
            period_start=start, period_end=end, created_at=now, updated_at=now,
            stripe_subscription_id=s.id, cancel_at_period_end=s.cancel_at_period_end,
        )  # fmt: skip
        conn.execute(subscriptions.insert().values(**{f: getattr(sub, f) for f in sub.__struct_fields__}))
        created = events.SubscriptionCreated(
            data=events.SubscriptionCreatedData(
                subscription_id=sub.id, customer_id=customer_id, plan_id=plan.id, plan_name=plan.name,
                total_budget=from_micros(sub.total_budget), currency=plan.currency,
                period_start=start, period_end=end, status=sub.status,
            ),
            **envelope(now, customer_id, correlation_id),
        )  # fmt: skip
        self._emit(conn, created, customer_id)
        return f"created ({sub.status})", customer_id

    # ---- invoices ----------------------------------------------------------------------

    def apply_stripe_invoice(
        self,
        conn: Connection,
        inv: Invoice,
        kind: InvoiceKind,
        correlation_id: str,
    ) -> tuple[str, str | None]:
        """``(outcome, billing customer id)``: the invoice recorded (``invoice.created``),
        paid (a payment, and ``invoice.paid`` for the period it bills unless billing holds a
        later one; a gateway resets the spend only for a later period than its own, and a
        canceled subscription's period stays), or its failed payment noted (the status
        follows ``customer.subscription.updated``)."""
        stripe_sub = inv.subscription_id
        if stripe_sub is None:
            return "ignored: not a subscription's invoice", None
        sub = self.stripe_subscription(conn, stripe_sub, lock=True)
        if sub is None:
            raise NotYet("subscription", stripe_sub)
        found = self._find(conn, invoices, inv.id, lock=True)
        start, end = inv.period()
        if found is None:
            self._record_stripe_invoice(conn, inv, sub, start, end, correlation_id)
            found = self._require(conn, invoices, inv.id, "invoice", lock=True)
        if kind != "paid":
            return ("recorded" if kind == "finalized" else "payment failed; invoice open"), sub.customer_id
        if found["status"] == "paid":
            return "unchanged: already paid", sub.customer_id
        now = self.clock()
        conn.execute(invoices.update().where(invoices.c.id == inv.id).values(status="paid", paid_at=now))
        amount = inv.micros(inv.amount_paid)
        conn.execute(
            payments.insert().values(id=new_id("pay"), invoice_id=inv.id, amount=amount, created_at=now)
        )
        if start < sub.period_start:
            return "paid (a period already left behind)", sub.customer_id
        if start > sub.period_start and sub.status != "canceled":
            conn.execute(
                subscriptions.update()
                .where(subscriptions.c.id == sub.id)
                .values(period_start=start, period_end=end, updated_at=now)
            )
        self._open_period(conn, sub, inv.id, amount, start, end, correlation_id)
        return "paid", sub.customer_id

    def _open_period(
        self,
        conn: Connection,
        sub: SubscriptionRow,
        invoice_id: str,
        amount: int,
        start: datetime,
        end: datetime,
        correlation_id: str,
    ) -> None:
        """``invoice.paid`` for the gateways: they take the period if it is later than
        theirs, with the spend back at 0 (a repeat for the same period changes nothing)."""
        paid = events.InvoicePaid(
            data=events.InvoicePaidData(
                invoice_id=invoice_id, customer_id=sub.customer_id, subscription_id=sub.id,
                amount_paid=from_micros(amount), new_period_start=start, new_period_end=end,
            ),
            **envelope(self.clock(), sub.customer_id, correlation_id),
        )  # fmt: skip
        self._emit(conn, paid, sub.customer_id)

    def _record_stripe_invoice(
        self,
        conn: Connection,
        inv: Invoice,
        sub: SubscriptionRow,
        start: datetime,
        end: datetime,
        correlation_id: str,
    ) -> None:
        invoice_id = _valid_id(inv.id)
        if invoice_id is None:
            raise Invalid(f"invoice {inv.id}: not usable as a billing id")
        now = self.clock()
        total = inv.micros(inv.amount_due)
        inserted = insert_new(
            conn, invoices, id=invoice_id, customer_id=sub.customer_id, subscription_id=sub.id,
            status="open", currency=inv.currency.upper(), total=total, period_start=start,
            period_end=end, created_at=now,
        )  # fmt: skip
        if not inserted:
            raise Conflict(f"invoice {inv.id}: subscription {sub.id} already has an invoice from {start}")
        created = events.InvoiceCreated(
            data=events.InvoiceCreatedData(
                invoice_id=invoice_id, subscription_id=sub.id, customer_id=sub.customer_id,
                total=str(from_micros(total)),
            ),
            **envelope(now, sub.customer_id, correlation_id),
        )  # fmt: skip
        self._emit(conn, created, sub.customer_id)

    # ---- the audit trail ---------------------------------------------------------------

    def audit_stripe_event(
        self,
        conn: Connection,
        event_id: str,
        event_type: str,
        object_id: str | None,
        outcome: str,
        customer_id: str | None,
    ) -> None:
        """``stripe.event_processed`` in the outbox history (``GET /api/v1/events``): which
        Stripe event, what it did, when; gateways ignore it."""
        now = self.clock()
        audit = events.UnknownEvent(
            event_type="stripe.event_processed",
            data={
                "stripe_event_id": event_id, "stripe_event_type": event_type, "object_id": object_id,
                "outcome": outcome[:500], "actor": "stripe-webhook",
            },
            **envelope(now, customer_id, event_id),
        )  # fmt: skip
        self._emit(conn, audit, customer_id)

    def link_stripe_customer(self, customer_id: str, stripe_id: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                customers.update().where(customers.c.id == customer_id).values(stripe_customer_id=stripe_id)
            )

    def get_stripe_customer(self, customer_id: str) -> str:
        """The Stripe customer id of a billing customer (:class:`NotFound` when it has none)."""
        found = self.get_customer(customer_id)
        if found is None:
            raise NotFound(f"customer {customer_id} not found")
        if found.stripe_customer_id is None:
            raise Conflict(f"customer {customer_id} has no Stripe customer")
        return found.stripe_customer_id
