"""The billing source of truth: domain operations over SQLite or PostgreSQL, one module per
aggregate, composed into the :class:`BillingStore` the API and the workers use.

Every state change runs in one database transaction that also writes its event to the
``billing_events`` outbox, in the envelope of ``billing_gateway.events``, so an event is
published if and only if its change was committed.

Several API servers, schedulers and ingestors may share one database. Every transition
reads the rows it changes under a lock, then decides: on PostgreSQL ``SELECT … FOR
UPDATE`` (always the subscription before its invoice, so two transitions never wait on
each other in a cycle); on SQLite every write transaction begins ``IMMEDIATE``, which
serializes writers. Uniqueness (idempotency keys, usage keys, one invoice per period, one
payment per invoice, plan ids) is a database constraint, never a read-then-insert.
"""

from __future__ import annotations

from typing import Any

from billing_gateway.billing.domain import BillingError, Conflict, Invalid, NotFound

from .base import insert_new, open_engine
from .customers import Customers
from .cycles import Cycles
from .keys import ApiKeys
from .outbox import OUTBOX_CHANNEL
from .records import (
    CustomerRow,
    InvoiceLineRow,
    InvoiceRow,
    OutboxState,
    PlanRow,
    Principal,
    RoutingPolicyRow,
    SubscriptionRow,
    UsageRow,
)
from .routing import RoutingPolicies
from .usage import Usage

__all__ = [
    "OUTBOX_CHANNEL",
    "BillingError",
    "BillingStore",
    "Conflict",
    "CustomerRow",
    "Invalid",
    "InvoiceLineRow",
    "InvoiceRow",
    "NotFound",
    "OutboxState",
    "PlanRow",
    "Principal",
    "RoutingPolicyRow",
    "SubscriptionRow",
    "UsageRow",
    "insert_new",
]


class BillingStore(Cycles, Customers, Usage, ApiKeys, RoutingPolicies):
    """Customers, plans, subscriptions, usage, invoices and payments, billing cycles, API
    keys, routing policies and the outbox, over one database."""

    @classmethod
    def open(cls, url: str, **options: Any) -> BillingStore:
        """A store on ``url`` (a SQLite path or URL, or a PostgreSQL URL), migrated."""
        return cls(open_engine(url, **options))
