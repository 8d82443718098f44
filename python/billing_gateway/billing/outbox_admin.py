"""Looking at the outbox and redriving its dead rows (``billing-gateway billing outbox``).

A row is ``dead`` when the broker rejected it ``max_attempts`` times (see
``dispatcher``). Once the cause is fixed (a stream created, a limit raised),
``redrive`` puts it back to ``pending`` with its attempts reset, and the dispatcher
publishes it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from .schema import tables
from .store import BillingStore, Conflict, NotFound

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
    query = sa.select(T.c.seq, T.c.event_id, T.c.event_type, T.c.status, T.c.attempts, T.c.last_error)
    if status is not None:
        query = query.where(T.c.status == status)
    with store.engine.connect() as conn:
        return [OutboxRow(*row) for row in conn.execute(query.order_by(T.c.seq).limit(limit))]


def count_rows(store: BillingStore, status: str | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(T)
    if status is not None:
        query = query.where(T.c.status == status)
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def redrive(store: BillingStore, seqs: Sequence[int] | None = None) -> int:
    """Puts dead rows back to ``pending``, attempts reset, due now: every dead row when
    ``seqs`` is None, else exactly those. Returns how many. An unknown seq raises
    :class:`NotFound`, a row that is not dead :class:`Conflict`; nothing changes then."""
    back = T.update().values(status="pending", attempts=0, next_attempt_at=store.clock(), lease_until=None)
    with store.engine.begin() as conn:
        if seqs is None:
            return int(conn.execute(back.where(T.c.status == "dead")).rowcount)
        wanted = sorted(set(seqs))
        found = dict(
            conn.execute(sa.select(T.c.seq, T.c.status).where(T.c.seq.in_(wanted)).with_for_update()).all()
        )
        unknown = [seq for seq in wanted if seq not in found]
        if unknown:
            raise NotFound(f"no outbox row with seq {', '.join(map(str, unknown))}")
        alive = [f"seq {seq} is {found[seq]}" for seq in wanted if found[seq] != "dead"]
        if alive:
            raise Conflict(f"only dead rows can be redriven: {', '.join(alive)}")
        return int(conn.execute(back.where(T.c.seq.in_(wanted), T.c.status == "dead")).rowcount)
