"""Stripe's objects as billing reads them: the few fields of an event, a customer, a
subscription and an invoice that sync needs, decoded from Stripe's JSON (everything else
is ignored), and the conversions onto billing's terms.

- Statuses: Stripe has eight, billing four (see :data:`STATUS_MAP`).
- Periods: since API version 2025-03-31 ``current_period_start/end`` live on the
  subscription items; older versions put them on the subscription. Both are read, the
  items first.
- Amounts: Stripe's integers in the currency's minor unit become exact micro-units
  (:func:`to_micros`), by the currency's number of decimals.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from billing_gateway.billing.domain import Invalid, SubscriptionStatus

__all__ = [
    "STATUS_MAP",
    "Customer",
    "Event",
    "Invoice",
    "Subscription",
    "at",
    "billing_status",
    "decode_event",
    "decode_object",
    "to_micros",
]

STATUS_MAP: dict[str, SubscriptionStatus] = {
    "trialing": "trialing",
    "active": "active",
    "past_due": "past_due",
    "unpaid": "past_due",
    "incomplete": "past_due",
    "paused": "past_due",
    "incomplete_expired": "canceled",
    "canceled": "canceled",
}
"""Every Stripe subscription status onto billing's. Billing has no paused or unpaid
state: those (and ``incomplete``, a first payment still pending) are ``past_due`` — live,
still able to pay and come back; ``incomplete_expired`` and ``canceled`` end it for good."""

ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)  # Stripe's zero-decimal currencies
THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])


class _Ref(msgspec.Struct):
    id: str


class _Meta(msgspec.Struct):
    tenant_id: str | None = None


class Customer(msgspec.Struct):
    id: str
    name: str | None = None
    email: str | None = None
    metadata: _Meta = msgspec.field(default_factory=_Meta)
    deleted: bool = False


class _Price(msgspec.Struct):
    id: str


class SubscriptionItem(msgspec.Struct):
    price: _Price
    current_period_start: int | None = None
    current_period_end: int | None = None


class _Items(msgspec.Struct):
    data: list[SubscriptionItem] = msgspec.field(default_factory=list)


class Subscription(msgspec.Struct):
    id: str
    customer: str | _Ref
    status: str
    items: _Items = msgspec.field(default_factory=_Items)
    current_period_start: int | None = None
    current_period_end: int | None = None
    cancel_at_period_end: bool = False
    metadata: _Meta = msgspec.field(default_factory=_Meta)
    latest_invoice: str | _Ref | None = None

    @property
    def customer_id(self) -> str:
        return self.customer if isinstance(self.customer, str) else self.customer.id

    @property
    def latest_invoice_id(self) -> str | None:
        ref = self.latest_invoice
        return ref.id if isinstance(ref, _Ref) else ref

    def period(self, item: SubscriptionItem) -> tuple[datetime, datetime]:
        """The current period: the item's (API 2025-03-31 and later), else the subscription's."""
        start = item.current_period_start or self.current_period_start
        end = item.current_period_end or self.current_period_end
        if start is None or end is None or end <= start:
            raise Invalid(f"subscription {self.id}: no current period on its items or itself")
        return at(start), at(end)


class _Period(msgspec.Struct):
    start: int
    end: int


class _Line(msgspec.Struct):
    period: _Period | None = None


class _Lines(msgspec.Struct):
    data: list[_Line] = msgspec.field(default_factory=list)


class _SubscriptionDetails(msgspec.Struct):
    subscription: str | _Ref | None = None


class _Parent(msgspec.Struct):
    subscription_details: _SubscriptionDetails | None = None


class Invoice(msgspec.Struct):
    id: str
    customer: str | _Ref
    currency: str
    amount_due: int = 0
    amount_paid: int = 0
    period_start: int | None = None
    period_end: int | None = None
    subscription: str | _Ref | None = None
    """Before API version 2025-03-31; since, ``parent.subscription_details.subscription``."""
    parent: _Parent | None = None
    lines: _Lines = msgspec.field(default_factory=_Lines)

    @property
    def subscription_id(self) -> str | None:
        ref = self.subscription
        if ref is None and self.parent is not None and self.parent.subscription_details is not None:
            ref = self.parent.subscription_details.subscription
        return ref.id if isinstance(ref, _Ref) else ref

    def period(self) -> tuple[datetime, datetime]:
        """The period the invoice bills: its first line's (for a subscription, the period it
        opens), else the invoice's own."""
        for line in self.lines.data:
            if line.period is not None and line.period.end > line.period.start:
                return at(line.period.start), at(line.period.end)
        if self.period_start is None or self.period_end is None:
            raise Invalid(f"invoice {self.id}: no period")
        return at(self.period_start), at(self.period_end)

    def micros(self, amount: int) -> int:
        return to_micros(amount, self.currency)


class _Data(msgspec.Struct):
    object: dict[str, Any]


StripeId = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+\Z")]
"""An id or type as billing stores it: 1 to 255 characters, no control characters."""


class Event(msgspec.Struct):
    """A webhook event: what is stored and ordered before any handler reads the object."""

    id: StripeId
    type: StripeId
    created: Annotated[int, msgspec.Meta(ge=0, le=2**40)]
    data: _Data

    @property
    def object_id(self) -> str | None:
        found = self.data.object.get("id")
        return found if isinstance(found, str) else None


_event = msgspec.json.Decoder(Event)


def decode_event(payload: bytes) -> Event:
    """The event in ``payload``; :class:`Invalid` naming the field when it is not one billing
    can store (its object's id included)."""
    try:
        event = _event.decode(payload)
    except msgspec.MsgspecError as exc:
        raise Invalid(f"not a Stripe event: {exc}") from None
    if event.object_id is not None:
        try:
            msgspec.convert(event.object_id, StripeId)
        except msgspec.ValidationError as exc:
            raise Invalid(f"not a Stripe event: data.object.id: {exc}") from None
    return event


def decode_object(kind: type[msgspec.Struct], found: dict[str, Any]) -> Any:
    """One of the structs above from an event's ``data.object`` (or an API answer);
    :class:`Invalid` naming the field when Stripe's shape is not what billing reads."""
    try:
        return msgspec.convert(found, kind)
    except msgspec.ValidationError as exc:
        raise Invalid(f"{kind.__name__.lower()} {found.get('id', '?')}: {exc}") from None


def billing_status(stripe_status: str) -> SubscriptionStatus:
    try:
        return STATUS_MAP[stripe_status]
    except KeyError:
        raise Invalid(f"unknown Stripe subscription status {stripe_status!r}") from None


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def to_micros(amount: int, currency: str) -> int:
    """Stripe's integer amount in the currency's minor unit as exact micro-units."""
    code = currency.lower()
    decimals = 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2
    scale: int = 10 ** (6 - decimals)
    return amount * scale
