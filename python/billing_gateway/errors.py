"""Every error billing_gateway raises. Defined once here; the Rust core raises these classes."""

from __future__ import annotations

__all__ = [
    "BillingGatewayError",
    "InvalidAmount",
    "InvalidArgument",
    "InvalidEvent",
    "InvalidPolicy",
    "InvalidSnapshot",
    "ParkingFull",
    "UnknownReservation",
]


class BillingGatewayError(Exception):
    """Base class of every error raised by billing_gateway."""


class InvalidEvent(BillingGatewayError, ValueError):
    """An event is malformed or contradicts the table; the message names the field.

    The table is left exactly as it was.
    """


class InvalidAmount(BillingGatewayError, ValueError):
    """A money amount is negative, out of range, or not exact to the micro-unit."""


class InvalidPolicy(BillingGatewayError, ValueError):
    """A routing policy is malformed (for example, its CEL expression does not compile)."""


class InvalidSnapshot(BillingGatewayError, ValueError):
    """The bytes given to ``Gateway.restore`` were not produced by ``Gateway.snapshot``."""


class InvalidArgument(BillingGatewayError, ValueError):
    """An argument other than an amount is out of its range (a TTL, a grace period, ...)."""


class UnknownReservation(BillingGatewayError, KeyError):
    """A reservation id is unknown, expired, or already committed or released."""

    def __str__(self) -> str:
        # KeyError quotes its argument; the message reads better as it is.
        return str(self.args[0]) if self.args else ""


class ParkingFull(BillingGatewayError):
    """An event for a not-yet-created subscription could not wait: ``max_parked`` are waiting.

    The event was not applied; route it to a dead-letter queue and replay it later.
    """
