"""Invoices and their payments: paid (opening the next period), failed (``past_due``) or
voided, each under the lock of the subscription, then of the invoice."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from billing_gateway import events
from billing_gateway.billing.domain import LIVE_STATUSES, Conflict, may_become, require_transition
from billing_gateway.billing.schema import invoice_lines, invoices, payments, subscriptions
from billing_gateway.money import from_micros

from .base import load, new_id
from .outbox import envelope
from .records import InvoiceLineRow, InvoiceRow, SubscriptionRow
from .subscriptions import Subscriptions

__all__ = ["Invoices"]


class Invoices(Subscriptions):
    @staticmethod
    def _invoice(conn: Connection, row: RowMapping) -> InvoiceRow:
        """An invoice row with its lines."""
        lines = conn.execute(
            sa.select(invoice_lines.c.kind, invoice_lines.c.description, invoice_lines.c.amount)
            .where(invoice_lines.c.invoice_id == row["id"])
            .order_by(invoice_lines.c.id)
        )
        return load(InvoiceRow, row, lines=tuple(InvoiceLineRow(*line) for line in lines))

    def list_invoices(self, customer_id: str | None = None) -> list[InvoiceRow]:
        query = sa.select(invoices).order_by(invoices.c.created_at, invoices.c.id)
        if customer_id is not None:
            query = query.where(invoices.c.customer_id == customer_id)
        with self._reading() as conn:
            return [self._invoice(conn, r) for r in conn.execute(query).mappings().all()]

    def get_invoice(self, invoice_id: str) -> InvoiceRow:
        with self._reading() as conn:
            return self._invoice(conn, self._require(conn, invoices, invoice_id, "invoice"))

    def find_invoice(self, invoice_id: str) -> InvoiceRow | None:
        with self._reading() as conn:
            found = self._find(conn, invoices, invoice_id)
            return None if found is None else self._invoice(conn, found)

    def _locked_invoice(self, conn: Connection, invoice_id: str) -> tuple[InvoiceRow, SubscriptionRow]:
        """An invoice and its subscription, both locked (the subscription first)."""
        found = self._require(conn, invoices, invoice_id, "invoice")
        sub = self._subscription(conn, found["subscription_id"], lock=True)
        invoice = self._invoice(conn, self._require(conn, invoices, invoice_id, "invoice", lock=True))
        if invoice.status != "open":
            raise Conflict(f"invoice {invoice_id} is {invoice.status}, not open")
        return invoice, sub

    def pay_invoice(
        self, invoice_id: str, correlation_id: str | None = None, causation_id: str | None = None
    ) -> InvoiceRow:
        """Records the payment of an open invoice and marks it paid. For a live subscription
        it opens the next period (``invoice.paid``) and brings a ``trialing`` or ``past_due``
        one back to ``active`` (``subscription.updated``).

        The last invoice of a canceled subscription can still be paid — the money is owed —
        but that never reopens a period or revives the subscription, and emits no event: a
        gateway has nothing to apply."""
        with self.transaction() as conn:
            invoice, sub = self._locked_invoice(conn, invoice_id)
            return self._pay(conn, invoice, sub, correlation_id, causation_id)

    def _pay(
        self,
        conn: Connection,
        invoice: InvoiceRow,
        sub: SubscriptionRow,
        correlation_id: str | None,
        causation_id: str | None,
    ) -> InvoiceRow:
        now = self.clock()
        paid = conn.execute(
            invoices.update()
            .where(invoices.c.id == invoice.id, invoices.c.status == "open")
            .values(status="paid", paid_at=now)
        )
        if paid.rowcount != 1:
            raise Conflict(f"invoice {invoice.id} is no longer open")
        conn.execute(
            payments.insert().values(
                id=new_id("pay"), invoice_id=invoice.id, amount=invoice.total, created_at=now
            )
        )
        result = msgspec.structs.replace(invoice, status="paid", paid_at=now)
        if sub.status not in LIVE_STATUSES or sub.period_start != invoice.period_start:
            return result  # canceled (terminal), or an invoice of a period already left behind
        plan = self._plan(conn, sub.plan_id)
        start = invoice.period_end
        end = start + timedelta(days=plan.interval_days)
        self._move_period(conn, sub, start, end, now)
        event = events.InvoicePaid(
            data=events.InvoicePaidData(
                invoice_id=invoice.id,
                customer_id=sub.customer_id,
                subscription_id=sub.id,
                amount_paid=from_micros(invoice.total),
                new_period_start=start,
                new_period_end=end,
            ),
            **envelope(now, sub.customer_id, correlation_id, causation_id),
        )
        self._emit(conn, event, sub.customer_id)
        if sub.status != "active" and may_become(sub.status, "active"):
            data = {"subscription_id": sub.id, "customer_id": sub.customer_id, "status": "active"}
            self._change_subscription(conn, sub, {"status": "active"}, data, correlation_id, event.event_id)
        return result

    def fail_payment(self, invoice_id: str, correlation_id: str | None = None) -> InvoiceRow:
        """A payment attempt failed: the invoice stays open, the subscription goes ``past_due``
        (``invoice.payment_failed``). Refused (:class:`Conflict`, no event) for a canceled one."""
        with self.transaction() as conn:
            invoice, sub = self._locked_invoice(conn, invoice_id)
            now = self.clock()  # once the rows are ours: events of one subscription in commit order
            if sub.status != "past_due":
                require_transition(sub.id, sub.status, "past_due")
                conn.execute(
                    subscriptions.update()
                    .where(subscriptions.c.id == sub.id)
                    .values(status="past_due", updated_at=now)
                )
            event = events.InvoicePaymentFailed(
                data=events.InvoicePaymentFailedData(
                    customer_id=sub.customer_id, subscription_id=sub.id, invoice_id=invoice_id
                ),
                **envelope(now, sub.customer_id, correlation_id),
            )
            self._emit(conn, event, sub.customer_id)
            return invoice

    def void_invoice(self, invoice_id: str) -> InvoiceRow:
        """An open invoice that will not be collected."""
        with self.transaction() as conn:
            invoice, _ = self._locked_invoice(conn, invoice_id)
            conn.execute(invoices.update().where(invoices.c.id == invoice_id).values(status="void"))
            return msgspec.structs.replace(invoice, status="void")
