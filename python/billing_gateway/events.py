"""Billing events on the wire: msgspec structs, one per event type, tagged by ``event_type``.

The three payloads of the event specification decode exactly as written there;
the extensions are all optional on the wire. Amounts are ``Decimal`` (JSON numbers
are decoded exactly, never through a float); timestamps must carry a UTC offset.
Unknown fields are ignored, so producers can add fields without breaking consumers.

What makes an event valid is defined once, by the Rust parser the gateway applies
events with: :func:`validate_event`. :func:`decode_event` runs it before building a
struct and :func:`encode_event` runs it on what it produces, so an event accepted here
is never refused by a gateway and the other way round. The structs below describe
shapes only; lengths (in bytes), amounts, time ranges and the rest are the validator's.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal

import msgspec

from .errors import InvalidEvent
from .gateway import validate_event
from .models import RoutingPolicy, UsageRecord, UtcDatetime

__all__ = [
    "EVENT_TYPES",
    "BillingEvent",
    "CustomerCreated",
    "CustomerCreatedData",
    "Event",
    "InvoiceCreated",
    "InvoiceCreatedData",
    "InvoicePaid",
    "InvoicePaidData",
    "InvoicePaymentFailed",
    "InvoicePaymentFailedData",
    "RoutingPolicyDeleted",
    "RoutingPolicyDeletedData",
    "RoutingPolicyUpserted",
    "SubscriptionCreated",
    "SubscriptionCreatedData",
    "SubscriptionUpdated",
    "SubscriptionUpdatedData",
    "UnknownEvent",
    "UsageReported",
    "decode_event",
    "encode_event",
    "validate_event",
]

Status = Literal[
    "active",
    "trialing",
    "past_due",
    "canceled",
    "unpaid",
    "incomplete",
    "incomplete_expired",
    "paused",
]


class SubscriptionCreatedData(msgspec.Struct, frozen=True, omit_defaults=True):
    subscription_id: str
    customer_id: str
    plan_id: str
    plan_name: str
    total_budget: Decimal
    currency: str
    period_start: UtcDatetime
    period_end: UtcDatetime
    status: Status = "active"


class SubscriptionUpdatedData(msgspec.Struct, frozen=True, omit_defaults=True):
    """Any of the optional fields may be absent, meaning unchanged."""

    subscription_id: str
    customer_id: str | None = None
    new_plan_id: str | None = None
    new_plan_name: str | None = None
    new_total_budget: Decimal | None = None
    status: Status | None = None


class InvoicePaidData(msgspec.Struct, frozen=True):
    invoice_id: str
    customer_id: str
    subscription_id: str
    amount_paid: Decimal
    new_period_start: UtcDatetime
    new_period_end: UtcDatetime


class InvoicePaymentFailedData(msgspec.Struct, frozen=True):
    customer_id: str
    subscription_id: str
    invoice_id: str


class RoutingPolicyDeletedData(msgspec.Struct, frozen=True):
    policy_id: str


class _EnvelopeFields(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The envelope every event shares, besides ``event_type`` and ``data``."""

    event_id: str
    timestamp: UtcDatetime
    tenant_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    version: int | None = None


class _Envelope(_EnvelopeFields, frozen=True, kw_only=True, tag_field="event_type"):
    @property
    def event_type(self) -> str:
        tag = self.__struct_config__.tag
        assert isinstance(tag, str)
        return tag


class SubscriptionCreated(_Envelope, frozen=True, kw_only=True, tag="subscription.created"):
    data: SubscriptionCreatedData


class SubscriptionUpdated(_Envelope, frozen=True, kw_only=True, tag="subscription.updated"):
    data: SubscriptionUpdatedData


class InvoicePaid(_Envelope, frozen=True, kw_only=True, tag="invoice.paid"):
    data: InvoicePaidData


class InvoicePaymentFailed(_Envelope, frozen=True, kw_only=True, tag="invoice.payment_failed"):
    data: InvoicePaymentFailedData


class RoutingPolicyUpserted(_Envelope, frozen=True, kw_only=True, tag="routing_policy.upserted"):
    data: RoutingPolicy


class RoutingPolicyDeleted(_Envelope, frozen=True, kw_only=True, tag="routing_policy.deleted"):
    data: RoutingPolicyDeletedData


class UsageReported(_Envelope, frozen=True, kw_only=True, tag="usage.reported"):
    data: UsageRecord


class CustomerCreatedData(msgspec.Struct, frozen=True):
    id: str
    name: str
    email: str
    stripe_customer_id: str | None = None


class CustomerCreated(_Envelope, frozen=True, kw_only=True, tag="customer.created"):
    data: CustomerCreatedData


class InvoiceCreatedData(msgspec.Struct, frozen=True):
    invoice_id: str
    subscription_id: str
    customer_id: str
    total: str
    """The invoice's total, a decimal string (``"29.5"``)."""


class InvoiceCreated(_Envelope, frozen=True, kw_only=True, tag="invoice.created"):
    data: InvoiceCreatedData


BillingEvent = CustomerCreated | InvoiceCreated
"""Billing's own events, typed for the service that emits them. A gateway has nothing to
apply in them: they are valid events of types it ignores (``ApplyOutcome.IGNORED``), and
:func:`decode_event` reads them as :class:`UnknownEvent`, as it reads any type outside
:data:`EVENT_TYPES`."""


class UnknownEvent(_EnvelopeFields, frozen=True, kw_only=True):
    """An event whose type this version does not know; kept whole, skipped by the gateway."""

    event_type: str
    data: dict[str, Any]


Event = (
    SubscriptionCreated
    | SubscriptionUpdated
    | InvoicePaid
    | InvoicePaymentFailed
    | RoutingPolicyUpserted
    | RoutingPolicyDeleted
    | UsageReported
)
_KNOWN = (
    SubscriptionCreated,
    SubscriptionUpdated,
    InvoicePaid,
    InvoicePaymentFailed,
    RoutingPolicyUpserted,
    RoutingPolicyDeleted,
    UsageReported,
)
EVENT_TYPES: frozenset[str] = frozenset(str(cls.__struct_config__.tag) for cls in _KNOWN)
"""The event types this version knows."""


class _Head(msgspec.Struct):
    event_type: str


_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)
_unknown_decoder = msgspec.json.Decoder(UnknownEvent)
_head_decoder = msgspec.json.Decoder(_Head)
_encoder = msgspec.json.Encoder(decimal_format="number")
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def _message(exc: msgspec.MsgspecError) -> str:
    """``Expected `str`, got `int` - at `$.data.plan_id``` -> ``data.plan_id: Expected ...``."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any text
    msg, path = match["msg"], (match["path"] or "").lstrip(".")
    field, sep, rest = msg.partition(": ")
    if sep and re.fullmatch(r"\w+", field):  # a message from our own checks names its field
        path, msg = f"{path}.{field}" if path else field, rest
    return f"{path or 'event'}: {msg}"


def decode_event(raw: bytes | str) -> Event | UnknownEvent:
    """Validates (:func:`validate_event`) and decodes one JSON event.

    Raises :class:`InvalidEvent` (whose message names the offending field) for anything
    malformed. An event of a type this version does not know decodes to :class:`UnknownEvent`.
    """
    validate_event(raw)
    try:
        try:
            return _decoder.decode(raw)
        except msgspec.ValidationError:
            if _head_decoder.decode(raw).event_type in EVENT_TYPES:
                raise
            return _unknown_decoder.decode(raw)
    except msgspec.MsgspecError as exc:  # the structs hold whatever validates (tested); never a crash
        raise InvalidEvent(_message(exc)) from None


def encode_event(event: Event | BillingEvent | UnknownEvent) -> bytes:
    """Encodes an event struct as JSON (amounts as JSON numbers, exactly).

    Raises :class:`InvalidEvent` naming the field when the result is not a valid event
    (an id longer than 256 bytes, a negative amount, ...): nothing unappliable leaves here.
    """
    if not isinstance(event, (*_KNOWN, CustomerCreated, InvoiceCreated, UnknownEvent)):
        raise TypeError(f"expected a billing_gateway.events struct, not {type(event).__name__}")
    try:
        encoded = _encoder.encode(event)
    except UnicodeEncodeError:
        raise InvalidEvent("event: a string holds a lone surrogate (it cannot be UTF-8)") from None
    except RecursionError:
        raise InvalidEvent("event: nested too deeply") from None
    validate_event(encoded)
    return encoded
