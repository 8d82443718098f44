"""The Billing API's request and response bodies (msgspec), shared by the service and its client.

Money is a decimal on the wire (a JSON string in responses; a number or a string in
requests), exact to the micro-unit; times are ISO 8601 with an offset.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "Customer",
    "CustomerIn",
    "EventPage",
    "Invoice",
    "InvoiceLine",
    "Plan",
    "PlanIn",
    "Subscription",
    "SubscriptionIn",
    "SubscriptionPatch",
    "UsageIn",
    "UsageRecordOut",
]

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
Money = Decimal  # checked to be exact and non-negative by _micros


# ---- wire types -------------------------------------------------------------------------------


class CustomerIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    email: Annotated[str, msgspec.Meta(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)]
    stripe_customer_id: Annotated[str, msgspec.Meta(max_length=255)] | None = None


class Customer(msgspec.Struct):
    id: str
    name: str
    email: str
    stripe_customer_id: str | None
    created_at: datetime


class PlanIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
    included_budget: Money
    price: Money
    interval_days: Annotated[int, msgspec.Meta(ge=1, le=3660)] = 30
    product_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    id: Id | None = None


class Plan(msgspec.Struct):
    id: str
    name: str
    product_name: str
    currency: str
    interval_days: int
    included_budget: Decimal
    price: Decimal


class SubscriptionIn(msgspec.Struct, forbid_unknown_fields=True):
    customer_id: Id
    plan_id: Id
    total_budget: Money | None = None
    trial_days: Annotated[int, msgspec.Meta(ge=0, le=365)] = 0


class SubscriptionPatch(msgspec.Struct, forbid_unknown_fields=True):
    """Plan change, budget change, or a status change (``"canceled"`` cancels)."""

    plan_id: Id | None = None
    total_budget: Money | None = None
    status: Literal["active", "past_due", "canceled"] | None = None


class Subscription(msgspec.Struct):
    id: str
    customer_id: str
    plan_id: str
    status: str
    total_budget: Decimal
    period_start: datetime
    period_end: datetime
    created_at: datetime
    updated_at: datetime


class UsageIn(msgspec.Struct, forbid_unknown_fields=True):
    subscription_id: Id
    amount: Money
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None


class UsageRecordOut(msgspec.Struct):
    id: str
    subscription_id: str
    customer_id: str
    amount: Decimal
    period_start: datetime
    idempotency_key: str
    created_at: datetime


class InvoiceLine(msgspec.Struct):
    kind: str
    description: str
    amount: Decimal


class Invoice(msgspec.Struct):
    id: str
    customer_id: str
    subscription_id: str
    status: str
    currency: str
    total: Decimal
    period_start: datetime
    period_end: datetime
    created_at: datetime
    paid_at: datetime | None
    lines: list[InvoiceLine]


class EventPage(msgspec.Struct):
    events: list[dict[str, Any]]
    next_after: int
