"""What the store returns: typed, immutable rows (money in integer micro-units, times in UTC)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from billing_gateway.billing.domain import SubscriptionStatus
from billing_gateway.models import RoutingPolicy

__all__ = [
    "CustomerRow",
    "InvoiceLineRow",
    "InvoiceRow",
    "OutboxState",
    "PlanRow",
    "Principal",
    "RoutingPolicyRow",
    "SubscriptionRow",
    "UsageRow",
]


class Principal(msgspec.Struct, frozen=True):
    """The caller behind an API key: its scopes, and the one customer it is bound to, if any."""

    key_id: str
    scopes: frozenset[str]
    customer_id: str | None = None


class CustomerRow(msgspec.Struct, frozen=True):
    id: str
    name: str
    email: str
    stripe_customer_id: str | None
    created_at: datetime


class PlanRow(msgspec.Struct, frozen=True):
    """A plan with its current price and its product's name."""

    id: str
    product_id: str
    name: str
    currency: str
    interval_days: int
    included_budget: int
    created_at: datetime
    price: int
    product_name: str


class SubscriptionRow(msgspec.Struct, frozen=True):
    id: str
    customer_id: str
    plan_id: str
    status: SubscriptionStatus
    total_budget: int
    period_start: datetime
    period_end: datetime
    created_at: datetime
    updated_at: datetime


class UsageRow(msgspec.Struct, frozen=True):
    id: str
    subscription_id: str
    customer_id: str
    amount: int
    period_start: datetime
    idempotency_key: str
    created_at: datetime
    invoice_id: str | None = None


class InvoiceLineRow(msgspec.Struct, frozen=True):
    kind: str
    description: str
    amount: int


class InvoiceRow(msgspec.Struct, frozen=True):
    id: str
    customer_id: str
    subscription_id: str
    status: str
    currency: str
    total: int
    period_start: datetime
    period_end: datetime
    created_at: datetime
    paid_at: datetime | None = None
    lines: tuple[InvoiceLineRow, ...] = ()


class OutboxState(msgspec.Struct, frozen=True):
    """Outbox rows by status, and the age of the oldest pending one."""

    counts: dict[str, int]
    oldest_pending_s: float


class RoutingPolicyRow(msgspec.Struct, frozen=True):
    """A routing policy as billing holds it (``cost`` of each target in micro-units);
    ``deleted_at`` is set on a tombstone."""

    policy: RoutingPolicy
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
