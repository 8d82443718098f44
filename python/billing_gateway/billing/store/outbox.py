"""The transactional outbox: every change writes its event in its own transaction; the
history is read back in order, and its state summed up for metrics."""

from __future__ import annotations

from datetime import datetime
from typing import NotRequired, TypedDict

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billing_gateway import events
from billing_gateway.billing.domain import Invalid
from billing_gateway.billing.schema import billing_events
from billing_gateway.errors import InvalidEvent

from .base import OUTBOX_WRITTEN, StoreBase, new_id, utc
from .records import OutboxState

__all__ = ["OUTBOX_CHANNEL", "Envelope", "Outbox", "envelope", "state_envelope"]

OUTBOX_CHANNEL = "billing_outbox"
"""PostgreSQL: every transaction that writes outbox rows sends ``NOTIFY billing_outbox``
(delivered when it commits), so dispatchers in other processes wake at once."""


class Envelope(TypedDict):
    """The envelope fields of an event, as keyword arguments of its struct."""

    event_id: str
    timestamp: datetime
    tenant_id: str | None
    correlation_id: NotRequired[str | None]
    causation_id: NotRequired[str | None]


def envelope(
    at: datetime, customer_id: str | None, correlation_id: str | None, causation_id: str | None = None
) -> Envelope:
    return Envelope(
        event_id=new_id("evt"),
        timestamp=at,
        tenant_id=customer_id,
        correlation_id=correlation_id,
        causation_id=causation_id,
    )


def state_envelope(key: str, at: datetime, tenant_id: str | None) -> Envelope:
    """The envelope of an event that restates current state (for a gateway's rebuild): the
    time of the change, and an id that the same state always gets."""
    return Envelope(event_id=f"state_{key}_{int(at.timestamp() * 1e6)}", timestamp=at, tenant_id=tenant_id)


class Outbox(StoreBase):
    def _emit(
        self, conn: Connection, event: events.Event | events.BillingEvent, customer_id: str | None
    ) -> None:
        """Writes ``event`` to the outbox in the change's transaction. An event a gateway could
        not apply (the single validator, ``events.validate_event``, refuses it) is
        :class:`Invalid` instead, and the whole change rolls back: billing never commits what
        its gateways would dead-letter."""
        try:
            payload = events.encode_event(event)  # validates what it encodes
        except InvalidEvent as exc:
            raise Invalid(f"the change would emit an event gateways cannot apply: {exc}") from None
        now = self.clock()
        if not conn.info.get(OUTBOX_WRITTEN):
            conn.info[OUTBOX_WRITTEN] = True
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"NOTIFY {OUTBOX_CHANNEL}")
        conn.execute(
            billing_events.insert().values(
                event_id=event.event_id,
                event_type=event.event_type,
                customer_id=customer_id,
                payload=payload,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )

    def outbox_state(self) -> OutboxState:
        """Outbox rows by status, and the age of the oldest pending one (for /metrics)."""
        ev = billing_events
        with self._reading() as conn:
            by_status = conn.execute(sa.select(ev.c.status, sa.func.count()).group_by(ev.c.status)).all()
            oldest = conn.execute(
                sa.select(sa.func.min(ev.c.created_at)).where(ev.c.status == "pending")
            ).scalar()
        age = (self.clock() - utc(oldest)).total_seconds() if oldest is not None else 0.0
        return OutboxState({str(k): int(v) for k, v in by_status}, max(0.0, age))

    def list_events(
        self, customer_id: str | None = None, after: int = 0, limit: int = 100
    ) -> list[tuple[int, bytes]]:
        """``(seq, envelope)`` from the outbox after ``seq``, oldest first."""
        ev = billing_events
        query = sa.select(ev.c.seq, ev.c.payload).where(ev.c.seq > after).order_by(ev.c.seq).limit(limit)
        if customer_id is not None:
            query = query.where(ev.c.customer_id == customer_id)
        with self._reading() as conn:
            return [(int(seq), bytes(payload)) for seq, payload in conn.execute(query)]
