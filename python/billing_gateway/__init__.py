"""billing_gateway: in-process budget enforcement for API and LLM gateways, on a Rust core.

>>> from billing_gateway import Gateway, to_micros
>>> gw = Gateway()
>>> gw.try_spend("cus_1", to_micros("0.25"))   # unknown tenants are denied by default
False
"""

from __future__ import annotations

from . import events
from .errors import (
    BillingGatewayError,
    InvalidAmount,
    InvalidArgument,
    InvalidEvent,
    InvalidPolicy,
    InvalidSnapshot,
    ParkingFull,
    UnknownReservation,
)
from .events import decode_event, encode_event
from .gateway import Decision, Gateway
from .models import ApplyOutcome, Budget, Reason, RoutingPolicy, Target, UsageRecord
from .money import MICROS_PER_UNIT, from_micros, to_micros

__all__ = [
    "MICROS_PER_UNIT",
    "ApplyOutcome",
    "BillingGatewayError",
    "Budget",
    "Decision",
    "Gateway",
    "InvalidAmount",
    "InvalidArgument",
    "InvalidEvent",
    "InvalidPolicy",
    "InvalidSnapshot",
    "ParkingFull",
    "Reason",
    "RoutingPolicy",
    "Target",
    "UnknownReservation",
    "UsageRecord",
    "decode_event",
    "encode_event",
    "events",
    "from_micros",
    "to_micros",
]
__version__ = "0.1.0"
