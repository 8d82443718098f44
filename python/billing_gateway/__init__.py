"""billing_gateway: in-process budget enforcement for API and LLM gateways, on a Rust core.

>>> from billing_gateway import Gateway, to_micros
>>> gw = Gateway()
>>> gw.try_spend("cus_1", to_micros("0.25"))   # unknown tenants are denied by default
False
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
from .models import ApplyOutcome, Budget, Reason, RoutingPolicy, Target, UsageRecord
from .money import MICROS_PER_UNIT, from_micros, to_micros

__all__ = [
    "MICROS_PER_UNIT",
    "ApplyOutcome",
    "BillingGatewayError",
    "Budget",
    "BudgetLeases",
    "Decision",
    "Gateway",
    "InvalidAmount",
    "InvalidArgument",
    "InvalidEvent",
    "InvalidPolicy",
    "InvalidSnapshot",
    "ParkingFull",
    "Reason",
    "Route",
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

if TYPE_CHECKING:
    from . import events
    from .events import decode_event, encode_event
    from .gateway import Decision, Gateway, Route
    from .leases.service import BudgetLeases

# The compiled core loads on first use, not on ``import billing_gateway``: the billing
# service and its client import this package without needing the gateway (nor redis,
# which ``BudgetLeases`` needs).
_LAZY = {
    "BudgetLeases": ".leases.service",
    "Decision": ".gateway",
    "Gateway": ".gateway",
    "Route": ".gateway",
    "decode_event": ".events",
    "encode_event": ".events",
}


def __getattr__(name: str) -> Any:
    if name == "events":
        return importlib.import_module(".events", __name__)
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
