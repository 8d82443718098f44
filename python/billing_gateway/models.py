"""Value types of the public API: decision reasons, apply outcomes, budget rows, usage records.

The Rust core hands these out. It finds each enum member by its value (``Reason("ok")``)
when ``_core`` is imported, and the import fails if one is missing: values, not positions,
are the contract (``tests/test_contract.py`` checks both ways). It builds ``Budget`` and
``UsageRecord`` from positional arguments, so their field order is part of it too.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

import msgspec

__all__ = ["ApplyOutcome", "Budget", "Reason", "RoutingPolicy", "Target", "UsageRecord"]

UtcDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A timezone-aware datetime; naive ones are rejected on the wire."""


class Reason(StrEnum):
    """Why a spend was allowed or refused."""

    OK = "ok"
    INSUFFICIENT_BUDGET = "insufficient_budget"
    UNKNOWN_TENANT = "unknown_tenant"
    INACTIVE = "inactive"
    PERIOD_ENDED = "period_ended"
    LEASE_EXHAUSTED = "lease_exhausted"
    """The replica's lease slice is used up; the shared budget may still have room."""


class ApplyOutcome(StrEnum):
    """What ``Gateway.apply`` did with an event."""

    APPLIED = "applied"
    """The table changed."""
    DUPLICATE = "duplicate"
    """The event id was seen before; nothing changed."""
    STALE = "stale"
    """Older than what the table holds, about a superseded subscription, or a status for a
    canceled one (``canceled`` is terminal); nothing changed."""
    PARKED = "parked"
    """Refers to a subscription not yet created; applied automatically when it is."""
    IGNORED = "ignored"
    """An event type the budget table does not act on."""


class Budget(msgspec.Struct, frozen=True):
    """One tenant's budget row. Money fields are integer micro-units."""

    tenant_id: str
    subscription_id: str
    plan_id: str
    plan_name: str
    currency: str
    total: int
    spent: int
    reserved: int
    remaining: int
    period_start: UtcDatetime
    period_end: UtcDatetime
    status: str

    @property
    def remaining_fraction(self) -> float:
        """``remaining / total`` (0.0 for a zero budget): for routing rules, not for money."""
        return self.remaining / self.total if self.total else 0.0


class UsageRecord(msgspec.Struct, frozen=True):
    """Committed spend of one subscription and period, from ``Gateway.drain_usage``."""

    tenant_id: str
    subscription_id: str
    amount: int
    period_start: UtcDatetime
    idempotency_key: str


class Target(msgspec.Struct, frozen=True):
    """An upstream a routing policy may pick. ``cost`` is in micro-units per request.

    On the wire (``routing_policy.upserted``) the event validator bounds the fields.
    """

    name: str
    weight: int = 1
    cost: int = 0


class RoutingPolicy(msgspec.Struct, frozen=True):
    """A routing rule: when ``match_expression`` (CEL) holds, pick among ``targets``."""

    id: str
    priority: int
    match_expression: str
    strategy: Literal["failover", "weighted", "least_cost"]
    targets: tuple[Target, ...]
