"""Billing cycles: every live subscription whose period has ended is invoiced (the plan's
price plus the usage beyond its budget), and paid at once when asked to. Subscriptions
driven by Stripe are left to Stripe, which invoices them (see :mod:`billing.stripe`)."""

from __future__ import annotations

import logging
from datetime import datetime

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billing_gateway import events
from billing_gateway.billing.domain import LIVE_STATUSES, BillingError, checked
from billing_gateway.billing.schema import invoice_lines, invoices, subscriptions, usage_records
from billing_gateway.money import from_micros

from .base import new_id
from .invoices import Invoices
from .outbox import envelope
from .records import InvoiceLineRow, InvoiceRow

__all__ = ["Cycles"]

log = logging.getLogger(__name__)


class Cycles(Invoices):
    def close_due_cycles(self, *, auto_pay: bool = True, now: datetime | None = None) -> list[InvoiceRow]:
        """Invoices every live subscription whose period has ended: the plan price plus usage
        beyond the included budget. With ``auto_pay`` the invoice is paid at once, which opens
        the next period (``invoice.paid``); otherwise it stays open for ``pay_invoice``.

        Each subscription's cycle is its own transaction: one that fails (a usage sum beyond
        64 bits, say) is logged and left for the next run, and the others are closed."""
        now = now or self.clock()
        subs = subscriptions
        with self._reading() as conn:
            due = (
                conn.execute(
                    sa.select(subs.c.id)
                    .where(
                        subs.c.status.in_(LIVE_STATUSES),
                        subs.c.period_end <= now,
                        subs.c.stripe_subscription_id.is_(None),  # Stripe invoices those
                    )
                    .order_by(subs.c.id)
                )
                .scalars()
                .all()
            )
        closed = []
        for sub_id in due:
            try:
                with self.transaction() as conn:
                    invoice = self._close_cycle(conn, sub_id, now, auto_pay)
            except (BillingError, sa.exc.DBAPIError) as exc:
                reason = getattr(exc, "orig", None) or exc
                log.error("billing cycle of subscription %s not closed: %s", sub_id, reason)
                continue
            if invoice is not None:
                closed.append(invoice)
        return closed

    def _close_cycle(
        self, conn: Connection, subscription_id: str, now: datetime, auto_pay: bool
    ) -> InvoiceRow | None:
        sub = self._subscription(conn, subscription_id, lock=True)
        if sub.period_end > now or sub.status not in LIVE_STATUSES or sub.stripe_subscription_id:
            return None  # closed by a concurrent scheduler, canceled meanwhile, or Stripe's
        existing = conn.execute(
            sa.select(invoices.c.id).where(
                invoices.c.subscription_id == subscription_id, invoices.c.period_start == sub.period_start
            )
        ).scalar()
        if existing is not None:
            return None  # already invoiced; waiting for payment
        plan = self._plan(conn, sub.plan_id)
        usage = usage_records
        in_period = (usage.c.subscription_id == subscription_id) & (usage.c.period_start == sub.period_start)
        used = checked(
            f"usage of subscription {subscription_id}",
            conn.execute(sa.select(usage.c.amount).where(in_period)).scalars(),
        )
        lines = (
            InvoiceLineRow("plan", f"{plan.name} ({plan.interval_days} days)", plan.price),
            InvoiceLineRow(
                "usage",
                f"usage {from_micros(used)} {plan.currency}, beyond the included budget",
                max(0, used - sub.total_budget),
            ),
        )
        invoice = InvoiceRow(
            id=new_id("inv"),
            customer_id=sub.customer_id,
            subscription_id=subscription_id,
            status="open",
            currency=plan.currency,
            total=checked(f"invoice of subscription {subscription_id}", (line.amount for line in lines)),
            period_start=sub.period_start,
            period_end=sub.period_end,
            created_at=now,
            lines=lines,
        )
        row = msgspec.structs.asdict(invoice)
        del row["lines"]
        conn.execute(invoices.insert().values(**row))
        conn.execute(
            invoice_lines.insert(),
            [{"invoice_id": invoice.id, **msgspec.structs.asdict(line)} for line in lines],
        )
        conn.execute(usage.update().where(in_period).values(invoice_id=invoice.id))
        created = events.InvoiceCreated(
            data=events.InvoiceCreatedData(
                invoice_id=invoice.id,
                subscription_id=subscription_id,
                customer_id=sub.customer_id,
                total=str(from_micros(invoice.total)),
            ),
            **envelope(self.clock(), sub.customer_id, f"cycle:{subscription_id}"),
        )
        self._emit(conn, created, sub.customer_id)
        if sub.cancel_at_period_end:  # the last period: invoiced, then the subscription ends
            data = {"subscription_id": sub.id, "customer_id": sub.customer_id, "status": "canceled"}
            cause = created.event_id
            sub = self._change_subscription(conn, sub, {"status": "canceled"}, data, f"cycle:{sub.id}", cause)
        if auto_pay:
            return self._pay(conn, invoice, sub, f"cycle:{subscription_id}", created.event_id)
        return invoice
