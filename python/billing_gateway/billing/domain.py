"""The billing domain's rules, defined once: its errors, the subscription lifecycle and the
bounds on money and keys.

Lifecycle: ``trialing`` and ``active`` subscriptions may fall ``past_due``; paying brings
``trialing`` and ``past_due`` back to ``active``; anything live may be ``canceled``, and
``canceled`` is terminal — no request, payment or billing cycle ever moves it again.

Money is integer micro-units. Every amount billing accepts (a price, a budget, one usage
record) is at most :data:`MAX_AMOUNT` (10^9 currency units, 10^15 micro-units), so a
billing cycle's invoice (a price plus the usage beyond the budget) stays within the 64-bit
columns for up to 9,000 maximal usage records; beyond that, :func:`checked` makes the sum
an error for that one subscription instead of an overflow.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

__all__ = [
    "LIVE_STATUSES",
    "MAX_AMOUNT",
    "MAX_KEY",
    "MAX_MICROS",
    "REQUESTABLE_STATUSES",
    "STATUSES",
    "TRANSITIONS",
    "BillingError",
    "Conflict",
    "Invalid",
    "NotFound",
    "RequestableStatus",
    "SubscriptionStatus",
    "check_amount",
    "check_key",
    "checked",
    "may_become",
    "require_live",
    "require_transition",
]


class BillingError(Exception):
    """A request the billing service refuses; ``status_code`` is its HTTP status."""

    status_code = 400


class NotFound(BillingError):
    status_code = 404


class Conflict(BillingError):
    """The request contradicts the current state (or a concurrent request that won)."""

    status_code = 409


class Invalid(BillingError):
    """Well-formed but refused. ``field`` names what is wrong and ``position`` where in it
    (a character offset in a CEL expression), when known."""

    status_code = 422

    def __init__(self, message: str, *, field: str | None = None, position: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.position = position


# ---- the subscription lifecycle -------------------------------------------------------------

SubscriptionStatus = Literal["trialing", "active", "past_due", "canceled"]
"""Every status a billing subscription has: the one definition (the store's rows, the API)."""
RequestableStatus = Literal["active", "past_due", "canceled"]
"""The statuses a request may ask for: every one a transition leads to (a trial is only
ever started by creating a subscription)."""
STATUSES: tuple[SubscriptionStatus, ...] = get_args(SubscriptionStatus)
REQUESTABLE_STATUSES: tuple[RequestableStatus, ...] = get_args(RequestableStatus)

TRANSITIONS: dict[SubscriptionStatus, frozenset[RequestableStatus]] = {
    "trialing": frozenset({"active", "past_due", "canceled"}),
    "active": frozenset({"past_due", "canceled"}),
    "past_due": frozenset({"active", "canceled"}),
    "canceled": frozenset(),
}
"""Allowed subscription status changes; ``canceled`` has none."""
LIVE_STATUSES = tuple(status for status, onward in TRANSITIONS.items() if onward)
"""Statuses that may still change: they spend, and are invoiced at the end of their period."""


def may_become(current: SubscriptionStatus, status: str) -> bool:
    return status in TRANSITIONS[current]


def require_live(subscription_id: str, current: str) -> None:
    """Refuses any change to a canceled (terminal) subscription."""
    if current not in LIVE_STATUSES:
        raise Conflict(f"subscription {subscription_id} is {current}: it cannot change any more")


def require_transition(subscription_id: str, current: SubscriptionStatus, status: str) -> None:
    require_live(subscription_id, current)
    if not may_become(current, status):
        raise Conflict(f"subscription {subscription_id} cannot go from {current} to {status}")


# ---- money --------------------------------------------------------------------------------

MAX_MICROS = 2**63 - 1
"""The largest amount a 64-bit column (and a gateway) holds."""
MAX_AMOUNT = 10**15
"""The largest amount billing accepts, in micro-units: 1,000,000,000 currency units."""


def check_amount(field: str, micros: int) -> int:
    """``micros`` if it is a valid amount (0 to :data:`MAX_AMOUNT`), else :class:`Invalid`."""
    if micros < 0:
        raise Invalid(f"{field}: must not be negative")
    if micros > MAX_AMOUNT:
        raise Invalid(f"{field}: must be at most {MAX_AMOUNT // 10**6} (currency units)")
    return micros


def checked(what: str, amounts: Iterable[int]) -> int:
    """The exact sum of ``amounts``, or :class:`Invalid` if it does not fit in 64 bits."""
    total = sum(amounts)
    if not 0 <= total <= MAX_MICROS:
        raise Invalid(f"{what}: {total} micro-units does not fit in 64 bits")
    return total


# ---- keys ---------------------------------------------------------------------------------

MAX_KEY = 255


def check_key(field: str, key: str) -> str:
    """``key`` if it is a usable idempotency key (1 to 255 characters, no control
    characters, which PostgreSQL refuses), else :class:`Invalid`."""
    if not 0 < len(key) <= MAX_KEY or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise Invalid(f"{field}: must be 1 to {MAX_KEY} characters without control characters")
    return key
