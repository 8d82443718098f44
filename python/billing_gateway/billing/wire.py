"""The Billing API's request and response bodies (msgspec), shared by the service and its client.

Money is a decimal on the wire, exact to the micro-unit: a JSON string in responses; in
requests a plain decimal string (``"12.5"``: ASCII digits, no sign, spaces or ``_``) or
an integer number of units — never a JSON number with a fraction, which many clients
produce through a binary float. Times are ISO 8601 with an offset.

Every string a request brings is bounded so that whatever billing stores, and every event
it emits, fits the database and what a gateway accepts (ids up to 256 bytes, names up to
1024 bytes): ids and keys are ASCII (one byte per character), names at most 200 characters
(at most 800 bytes of UTF-8), and no string carries control characters (NUL, newlines).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from .domain import RequestableStatus

__all__ = [
    "ID_PATTERN",
    "MAX_ID",
    "CancelIn",
    "Customer",
    "CustomerIn",
    "EventPage",
    "Invoice",
    "InvoiceLine",
    "Key",
    "PaymentMethods",
    "Plan",
    "PlanChangeIn",
    "PlanIn",
    "Portal",
    "PortalIn",
    "PreviewLine",
    "RoutingPolicy",
    "RoutingPolicyBody",
    "RoutingPolicyDeleted",
    "RoutingPolicyIn",
    "RoutingTarget",
    "RoutingTargetIn",
    "Subscription",
    "SubscriptionIn",
    "SubscriptionPatch",
    "UpcomingInvoice",
    "UsageIn",
    "UsageRecordOut",
]

_END = r"(?!\n)$"  # `$` alone also matches before a final newline
MAX_ID = 64
ID_PATTERN = rf"^[A-Za-z0-9_\-]+{_END}"
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=rf"^[!-~]+{_END}")]
"""An idempotency key: 1 to 255 visible ASCII characters (so at most 255 bytes)."""
_TEXT = rf"^[^\x00-\x1f\x7f]*{_END}"
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=_TEXT)]
ExternalId = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=_TEXT)]
Email = Annotated[
    str, msgspec.Meta(max_length=320, pattern=rf"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+{_END}")
]
Currency = Annotated[str, msgspec.Meta(pattern=rf"^[A-Z]{{3}}{_END}")]
Money = str | int
"""An amount in a request, read by ``to_micros`` (exact, strict) and bounded by the store."""
TargetName = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=rf"^[!-~]+{_END}")]
"""A routing target's name (``openai/gpt-4o``): 1 to 255 visible ASCII characters."""
Expression = Annotated[str, msgspec.Meta(max_length=4096, pattern=r"^[^\x00]*$")]
"""A CEL expression: no NUL; the compiler says what else is wrong with it."""
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
"""A signed 64-bit integer; the compiler says which values it takes."""


# ---- wire types -------------------------------------------------------------------------------


class CustomerIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    email: Email
    stripe_customer_id: ExternalId | None = None


class Customer(msgspec.Struct):
    id: str
    name: str
    email: str
    stripe_customer_id: str | None
    created_at: datetime


class PlanIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    currency: Currency
    included_budget: Money
    price: Money
    interval_days: Annotated[int, msgspec.Meta(ge=1, le=3660)] = 30
    product_name: Name | None = None
    id: Id | None = None
    stripe_price_id: ExternalId | None = None


class Plan(msgspec.Struct):
    id: str
    name: str
    product_name: str
    currency: str
    interval_days: int
    included_budget: Decimal
    price: Decimal
    stripe_price_id: str | None = None


class SubscriptionIn(msgspec.Struct, forbid_unknown_fields=True):
    customer_id: Id
    plan_id: Id
    total_budget: Money | None = None
    trial_days: Annotated[int, msgspec.Meta(ge=0, le=365)] = 0


class SubscriptionPatch(msgspec.Struct, forbid_unknown_fields=True):
    """Plan change, budget change, or a status change (``"canceled"`` cancels)."""

    plan_id: Id | None = None
    total_budget: Money | None = None
    status: RequestableStatus | None = None


class PlanChangeIn(msgspec.Struct, forbid_unknown_fields=True):
    """A plan change now (prorated as configured), or at the end of the period (Stripe)."""

    plan_id: Id
    at_period_end: bool = False


class CancelIn(msgspec.Struct, forbid_unknown_fields=True):
    """A cancellation now, or at the end of the period."""

    at_period_end: bool = False


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
    stripe_subscription_id: str | None = None
    cancel_at_period_end: bool = False


class UsageIn(msgspec.Struct, forbid_unknown_fields=True):
    subscription_id: Id
    amount: Money
    idempotency_key: Key | None = None


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


class RoutingTargetIn(msgspec.Struct, forbid_unknown_fields=True):
    name: TargetName
    weight: Int64 = 1
    cost: Money = 0
    """Per unit of work, for ``least_cost``: a decimal, like every amount."""


class RoutingPolicyBody(msgspec.Struct, forbid_unknown_fields=True):
    """A routing policy's rule (``PUT /routing-policies/{id}``); the compiler checks it."""

    priority: Int64
    match_expression: Expression
    strategy: Literal["failover", "weighted", "least_cost"]  # RoutingPolicy's
    targets: Annotated[list[RoutingTargetIn], msgspec.Meta(max_length=64)]


class RoutingPolicyIn(RoutingPolicyBody, forbid_unknown_fields=True):
    """``POST /routing-policies``: the rule and, optionally, its id (else one is made)."""

    id: Id | None = None


class RoutingTarget(msgspec.Struct):
    name: str
    weight: int
    cost: Decimal


class RoutingPolicy(msgspec.Struct):
    id: str
    priority: int
    match_expression: str
    strategy: str
    targets: list[RoutingTarget]
    created_at: datetime
    updated_at: datetime


class RoutingPolicyDeleted(msgspec.Struct):
    id: str
    deleted: bool = True


# ---- payments (Stripe) -------------------------------------------------------------------


class PortalIn(msgspec.Struct, forbid_unknown_fields=True):
    return_url: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=2000, pattern=r"^https?://[^\s]+\Z")] | None
    ) = None


class Portal(msgspec.Struct):
    url: str


class PaymentMethods(msgspec.Struct):
    data: list[dict[str, Any]]
    default_payment_method: str | None


class PreviewLine(msgspec.Struct):
    description: str | None
    amount: Decimal


class UpcomingInvoice(msgspec.Struct):
    customer_id: str
    currency: str
    amount_due: Decimal
    total: Decimal
    next_payment_attempt: datetime | None
    lines: list[PreviewLine]
