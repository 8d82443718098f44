"""The ``stripe_events`` inbox: each verified event stored once (by Stripe's event id) in
the transaction that acknowledges it, listed, and redriven (``billing-gateway billing
stripe events`` / ``stripe retry``).

Statuses: ``pending`` (to apply, ``next_attempt_at`` on), ``processed`` (applied; an
event older than what billing holds for its object is ``processed`` too, changing
nothing), ``ignored`` (a type billing does not handle), ``dead`` (failed
``max_attempts`` times; ``last_error`` says why).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from billing_gateway.billing import parked
from billing_gateway.billing.schema import stripe_events
from billing_gateway.billing.store import BillingStore, insert_new

from .objects import Event

__all__ = ["STATUSES", "InboxRow", "count_rows", "counts", "list_rows", "receive", "retry"]

T = stripe_events
STATUSES = ("pending", "processed", "ignored", "dead")


@dataclass(frozen=True)
class InboxRow:
    seq: int
    event_id: str
    event_type: str
    object_id: str | None
    status: str
    attempts: int
    last_error: str | None


def receive(store: BillingStore, event: Event, payload: bytes) -> bool:
    """Stores a verified event unless it is already stored: whether it is new."""
    now = store.clock()
    with store.transaction() as conn:
        return insert_new(
            conn, T, event_id=event.id, event_type=event.type, created=event.created,
            object_id=event.object_id, payload=payload, status="pending", attempts=0,
            next_attempt_at=now, received_at=now,
        )  # fmt: skip


def list_rows(store: BillingStore, status: str | None = None, limit: int = 50) -> list[InboxRow]:
    """The first ``limit`` events (of ``status``, or all), oldest first."""
    columns = (T.c.seq, T.c.event_id, T.c.event_type, T.c.object_id, T.c.status, T.c.attempts, T.c.last_error)
    return parked.list_rows(store, columns, InboxRow, status, limit)


def count_rows(store: BillingStore, status: str | None = None) -> int:
    return parked.count_rows(store, T, status)


def counts(store: BillingStore) -> dict[str, int]:
    """Events by status (for /metrics)."""
    with store.engine.connect() as conn:
        return {
            str(k): int(v)
            for k, v in conn.execute(sa.select(T.c.status, sa.func.count()).group_by(T.c.status))
        }


def retry(store: BillingStore, event_ids: Sequence[str] | None = None) -> int:
    """Dead events back to ``pending``, attempts reset, due now: every dead one when
    ``event_ids`` is None, else exactly those. An unknown id is :class:`NotFound`, one
    that is not dead :class:`Conflict`; nothing changes then."""
    names = ("Stripe event", "")
    return parked.redrive(
        store, T.c.event_id, event_ids, names, attempts=0, next_attempt_at=store.clock(), last_error=None
    )
