"""Billing events on the wire: msgspec structs, one per event type, tagged by ``event_type``.

The three payloads of the event specification decode exactly as written there;
the extensions are all optional on the wire. Amounts are ``Decimal`` (JSON numbers
are decoded exactly, never through a float); timestamps must carry a UTC offset.
Unknown fields are ignored, so producers can add fields without breaking consumers.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from .errors import InvalidAmount, InvalidEvent
from .models import RoutingPolicy, UsageRecord, UtcDatetime
from .money import to_micros

__all__ = [
    "EVENT_TYPES",
    "Event",
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
]

Id = Annotated[str, msgspec.Meta(pattern=r"\S", max_length=256)]
Name = Annotated[str, msgspec.Meta(max_length=1024)]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
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


def _check_amount(field: str, value: Decimal | None) -> None:
    if value is None:
        return
    try:
        micros = to_micros(value)
    except InvalidAmount as exc:
        raise ValueError(f"{field}: {exc}") from None
    if micros < 0:
        raise ValueError(f"{field}: must not be negative, got {value}")


def _check_period(start_field: str, start: datetime, end_field: str, end: datetime) -> None:
    if end <= start:
        raise ValueError(f"{end_field}: must be after {start_field}")


class SubscriptionCreatedData(msgspec.Struct, frozen=True, omit_defaults=True):
    subscription_id: Id
    customer_id: Id
    plan_id: Id
    plan_name: Name
    total_budget: Decimal
    currency: Currency
    period_start: UtcDatetime
    period_end: UtcDatetime
    status: Status = "active"

    def __post_init__(self) -> None:
        _check_amount("total_budget", self.total_budget)
        _check_period("period_start", self.period_start, "period_end", self.period_end)


class SubscriptionUpdatedData(msgspec.Struct, frozen=True, omit_defaults=True):
    """Any of the optional fields may be absent, meaning unchanged."""

    subscription_id: Id
    customer_id: Id | None = None
    new_plan_id: Id | None = None
    new_plan_name: Name | None = None
    new_total_budget: Decimal | None = None
    status: Status | None = None

    def __post_init__(self) -> None:
        _check_amount("new_total_budget", self.new_total_budget)


class InvoicePaidData(msgspec.Struct, frozen=True):
    invoice_id: Id
    customer_id: Id
    subscription_id: Id
    amount_paid: Decimal
    new_period_start: UtcDatetime
    new_period_end: UtcDatetime

    def __post_init__(self) -> None:
        _check_amount("amount_paid", self.amount_paid)
        _check_period("new_period_start", self.new_period_start, "new_period_end", self.new_period_end)


class InvoicePaymentFailedData(msgspec.Struct, frozen=True):
    customer_id: Id
    subscription_id: Id
    invoice_id: Id


class RoutingPolicyDeletedData(msgspec.Struct, frozen=True):
    policy_id: Id


class _EnvelopeFields(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The envelope every event shares, besides ``event_type`` and ``data``."""

    event_id: Id
    timestamp: UtcDatetime
    tenant_id: Id | None = None
    correlation_id: Id | None = None
    causation_id: Id | None = None
    version: Annotated[int, msgspec.Meta(ge=1)] | None = None


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
    """Decodes and validates one JSON event.

    Raises :class:`InvalidEvent` (whose message names the offending field) for anything
    malformed. An event of a type this version does not know decodes to :class:`UnknownEvent`.
    """
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        try:
            head = _head_decoder.decode(raw)
        except msgspec.MsgspecError:
            raise InvalidEvent(_message(exc)) from None
        if head.event_type in EVENT_TYPES:
            raise InvalidEvent(_message(exc)) from None
        try:
            return _unknown_decoder.decode(raw)
        except msgspec.MsgspecError as unknown_exc:
            raise InvalidEvent(_message(unknown_exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"event: malformed JSON ({exc})") from None


def encode_event(event: Event | UnknownEvent) -> bytes:
    """Encodes an event struct as JSON (amounts as JSON numbers, exactly)."""
    if not isinstance(event, (*_KNOWN, UnknownEvent)):
        raise TypeError(f"expected a billing_gateway.events struct, not {type(event).__name__}")
    return _encoder.encode(event)
