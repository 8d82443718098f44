"""Every error billing_gateway raises. Defined once here; the Rust core raises these classes."""

from __future__ import annotations

from typing import Literal

__all__ = [
    "BillingGatewayError",
    "InvalidAmount",
    "InvalidArgument",
    "InvalidEvent",
    "InvalidPolicy",
    "InvalidSnapshot",
    "ParkingFull",
    "UnknownReservation",
    "UnknownReservationReason",
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
    """A routing policy is malformed (for example, its CEL expression does not compile).

    ``policy_id`` names the policy, ``problem`` says what is wrong and with which field
    (``"match_expression: unknown variable \"foo\"..."``, ``"targets[1].weight: must be
    >= 0, got -1"``), and ``position`` is the character offset in ``match_expression``
    where the problem was found, when it has one. The policy set in force is unchanged.
    """

    policy_id: str
    problem: str
    position: int | None

    def __init__(
        self, message: str = "", policy_id: str = "", problem: str = "", position: int | None = None
    ) -> None:
        super().__init__(message)
        self.policy_id = policy_id
        self.problem = problem or message
        self.position = position

    def __reduce__(self) -> tuple[type[InvalidPolicy], tuple[str, str, str, int | None]]:
        return type(self), (str(self), self.policy_id, self.problem, self.position)


class InvalidSnapshot(BillingGatewayError, ValueError):
    """The bytes given to ``Gateway.restore`` were not produced by ``Gateway.snapshot``."""


class InvalidArgument(BillingGatewayError, ValueError):
    """An argument other than an amount is out of its range (a TTL, a grace period, ...)."""


UnknownReservationReason = Literal["unknown", "expired", "committed", "released"]
"""Which case an :class:`UnknownReservation` is (its ``reason``)."""


class UnknownReservation(BillingGatewayError, KeyError):
    """A reservation id names no outstanding hold; ``reason`` says which case it is:

    - ``"expired"``: its TTL passed, and the hold was released;
    - ``"committed"`` / ``"released"``: it was already committed / released;
    - ``"unknown"``: it was never issued, or was resolved longer ago than the gateway
      remembers.

    A gateway remembers how its recent reservations ended, each at least until 65,536
    newer ones have been taken (memory is bounded; a restored gateway starts with none).
    A call racing the one that resolves the hold may also be told ``"unknown"``. Either
    way the hold was resolved exactly once: a second commit never spends twice.
    """

    reason: UnknownReservationReason

    def __init__(self, message: str = "", reason: UnknownReservationReason = "unknown") -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        # KeyError quotes its argument; the message reads better as it is.
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[type[UnknownReservation], tuple[str, UnknownReservationReason]]:
        return type(self), (str(self), self.reason)


class ParkingFull(BillingGatewayError):
    """An event for a not-yet-created subscription could not wait: ``max_parked`` are waiting.

    The event was not applied; route it to a dead-letter queue and replay it later.
    """
