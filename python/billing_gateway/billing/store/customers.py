"""Customers: created with their ``customer.created`` event; a Stripe customer id belongs
to one customer at most."""

from __future__ import annotations

from billing_gateway import events
from billing_gateway.billing.domain import Conflict
from billing_gateway.billing.schema import customers

from .base import insert_new, load, new_id
from .outbox import Outbox, envelope
from .records import CustomerRow

__all__ = ["Customers"]


class Customers(Outbox):
    def create_customer(
        self, name: str, email: str, stripe_customer_id: str | None = None, correlation_id: str | None = None
    ) -> CustomerRow:
        now = self.clock()
        customer = CustomerRow(new_id("cus"), name, email, stripe_customer_id, now)
        with self.transaction() as conn:
            if stripe_customer_id is not None and not insert_new(
                conn, customers, id=customer.id, name=name, email=email,
                stripe_customer_id=stripe_customer_id, created_at=now,
            ):  # fmt: skip
                raise Conflict(f"stripe_customer_id: {stripe_customer_id} belongs to another customer")
            if stripe_customer_id is None:
                conn.execute(
                    customers.insert().values(id=customer.id, name=name, email=email, created_at=now)
                )
            event = events.CustomerCreated(
                data=events.CustomerCreatedData(customer.id, name, email, stripe_customer_id),
                **envelope(now, customer.id, correlation_id),
            )
            self._emit(conn, event, customer.id)
        return customer

    def get_customer(self, customer_id: str) -> CustomerRow | None:
        with self._reading() as conn:
            found = self._find(conn, customers, customer_id)
        return None if found is None else load(CustomerRow, found)
