"""Looking at the outbox and redriving its dead rows (``billing-gateway billing outbox``).

A row is ``dead`` when the broker rejected it ``max_attempts`` times (see
``dispatcher``). Once the cause is fixed (a stream created, a limit raised),
``redrive`` puts it back to ``pending`` with its attempts reset, and the dispatcher
publishes it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import parked
from .schema import tables
from .store import BillingStore

__all__ = ["STATUSES", "OutboxRow", "count_rows", "list_rows", "redrive"]

T = tables["billing_events"]
STATUSES = ("pending", "published", "dead")


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    event_id: str
    event_type: str
    status: str
    attempts: int
    last_error: str | None


def list_rows(store: BillingStore, status: str | None = None, limit: int = 50) -> list[OutboxRow]:
    """The first ``limit`` rows (of ``status``, or all), oldest first."""
    columns = (T.c.seq, T.c.event_id, T.c.event_type, T.c.status, T.c.attempts, T.c.last_error)
    return parked.list_rows(store, columns, OutboxRow, status, limit)


def count_rows(store: BillingStore, status: str | None = None) -> int:
    return parked.count_rows(store, T, status)


def redrive(store: BillingStore, seqs: Sequence[int] | None = None) -> int:
    """Puts dead rows back to ``pending``, attempts reset, due now: every dead row when
    ``seqs`` is None, else exactly those. Returns how many. An unknown seq raises
    :class:`NotFound`, a row that is not dead :class:`Conflict`; nothing changes then."""
    names = ("outbox row with seq", "seq ")
    return parked.redrive(
        store, T.c.seq, seqs, names, attempts=0, next_attempt_at=store.clock(), lease_until=None
    )
