"""The billing side: the source of truth the gateways replicate.

A reference Billing service (REST API over SQLite or PostgreSQL) whose every state
change writes its event to a transactional outbox, a dispatcher that publishes the
outbox to NATS JetStream, a scheduler that closes billing cycles, and the ingestion
of gateway usage.

``from billing_gateway.billing import BillingClient`` (or ``AsyncBillingClient``) loads
the client alone: neither the web framework nor the database layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import AsyncBillingClient, BillingClient

__all__ = ["AsyncBillingClient", "BillingClient"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
