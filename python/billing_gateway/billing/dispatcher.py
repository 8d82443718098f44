"""The outbox dispatcher: publishes ``billing_events`` rows to NATS JetStream.

It claims pending rows, publishes each with ``Nats-Msg-Id = event_id`` and marks it
published. On PostgreSQL the claim is ``SELECT … FOR UPDATE SKIP LOCKED`` inside the
transaction that marks the rows, so several dispatchers never hold the same row. On
SQLite it is one atomic ``UPDATE … RETURNING`` that leases the rows for ``lease_s``.

A crash between publish and mark leaves the row pending (or its lease expires), so it
is published again: only ever a duplicate, which the broker's ``Nats-Msg-Id`` window
and the consumers' dedupe absorb; never a loss. A failed publish is retried with
exponential backoff; after ``max_attempts`` the row is parked as ``dead`` with its
last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from nats.js import JetStreamContext
from sqlalchemy.engine import Connection

from billing_gateway.stream import event_subject

from .schema import tables
from .store import BillingStore

__all__ = ["Dispatcher", "DispatcherStats"]

log = logging.getLogger(__name__)
T = tables["billing_events"]


@dataclass
class DispatcherStats:
    published: int = 0
    duplicates: int = 0
    failures: int = 0
    dead: int = 0


class Dispatcher:
    def __init__(
        self,
        store: BillingStore,
        js: JetStreamContext,
        *,
        batch: int = 100,
        max_attempts: int = 8,
        backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
        lease_s: float = 30.0,
        publish_timeout_s: float = 5.0,
    ) -> None:
        self.store = store
        self.js = js
        self.batch = batch
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.lease_s = lease_s
        self.publish_timeout_s = publish_timeout_s
        self.stats = DispatcherStats()

    async def dispatch_once(self) -> int:
        """Publishes up to ``batch`` due rows; returns how many it handled."""
        if self.store.engine.dialect.name == "postgresql":
            with self.store.engine.begin() as conn:
                rows = self._select_due(conn)
                results = await self._publish_all(rows)
                self._mark(conn, rows, results)
            return len(rows)
        with self.store.engine.begin() as conn:
            rows = self._lease_due(conn)
        results = await self._publish_all(rows)
        with self.store.engine.begin() as conn:
            self._mark(conn, rows, results)
        return len(rows)

    async def run(self, stop: asyncio.Event, idle_s: float = 0.2) -> None:
        """Dispatches until ``stop`` is set, pausing ``idle_s`` whenever nothing is due."""
        while not stop.is_set():
            try:
                handled = await self.dispatch_once()
            except sa.exc.OperationalError as exc:
                log.warning("outbox database unavailable: %s", exc)
                handled = 0
            if handled == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), idle_s)

    # ---- claiming -------------------------------------------------------------------------

    def _due(self) -> Any:
        now = self.store.clock()
        return (
            sa.select(T.c.seq, T.c.event_id, T.c.event_type, T.c.payload, T.c.attempts)
            .where(T.c.status == "pending", T.c.next_attempt_at <= now)
            .order_by(T.c.seq)
            .limit(self.batch)
        )

    def _select_due(self, conn: Connection) -> list[Any]:
        return list(conn.execute(self._due().with_for_update(skip_locked=True)).mappings())

    def _lease_due(self, conn: Connection) -> list[Any]:
        now = self.store.clock()
        claimable = (
            self._due()
            .with_only_columns(T.c.seq)
            .where(sa.or_(T.c.lease_until.is_(None), T.c.lease_until < now))
        )
        leased = conn.execute(
            T.update()
            .where(T.c.seq.in_(claimable.scalar_subquery()))
            .values(lease_until=now + timedelta(seconds=self.lease_s))
            .returning(T.c.seq, T.c.event_id, T.c.event_type, T.c.payload, T.c.attempts)
        ).mappings()
        return sorted(leased, key=lambda r: r["seq"])

    # ---- publishing and marking -----------------------------------------------------------

    async def _publish_all(self, rows: list[Any]) -> list[str | None]:
        """Publishes a batch pipelined: sent in outbox order on one connection, acks awaited together."""
        return list(await asyncio.gather(*(self._publish(row) for row in rows)))

    async def _publish(self, row: Any) -> str | None:
        """None when published, else the error."""
        try:
            ack = await self.js.publish(
                event_subject(row["event_type"]),
                bytes(row["payload"]),
                headers={"Nats-Msg-Id": row["event_id"]},
                timeout=self.publish_timeout_s,
            )
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        if ack.duplicate:
            self.stats.duplicates += 1
        return None

    def _mark(self, conn: Connection, rows: list[Any], results: list[str | None]) -> None:
        now = self.store.clock()
        published = [row["seq"] for row, error in zip(rows, results, strict=True) if error is None]
        if published:  # one statement for the batch
            done = T.update().where(T.c.seq.in_(published))
            conn.execute(done.values(status="published", published_at=now, lease_until=None))
            self.stats.published += len(published)
        for row, error in zip(rows, results, strict=True):
            if error is None:
                continue
            where = T.c.seq == row["seq"]
            attempts = row["attempts"] + 1
            self.stats.failures += 1
            if attempts >= self.max_attempts:
                self.stats.dead += 1
                log.error("outbox event %s is dead after %d attempts: %s", row["event_id"], attempts, error)
                values: dict[str, Any] = {"status": "dead"}
            else:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempts - 1))
                values = {"next_attempt_at": now + timedelta(seconds=delay)}
                log.warning("outbox event %s failed (attempt %d): %s", row["event_id"], attempts, error)
            conn.execute(
                T.update()
                .where(where)
                .values(attempts=attempts, last_error=error[:2000], lease_until=None, **values)
            )

    def pending(self) -> dict[str, int]:
        """Rows by status (``pending``, ``published``, ``dead``)."""
        counts: dict[str, int] = self.store.outbox_state()["counts"]
        return counts
