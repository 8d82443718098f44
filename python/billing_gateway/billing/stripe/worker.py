"""The Stripe worker: applies the stored webhook events, oldest first, one transaction each.

A transaction claims one due event (on PostgreSQL ``FOR UPDATE SKIP LOCKED``, so several
workers never hold the same one; SQLite serializes writers), applies it
(:mod:`.handlers`) with its outbox events and its audit entry, and marks it processed:
all of it commits, or none of it. A ``kill -9`` anywhere leaves the event pending, and
it is applied once, later. A handler that fails is rolled back to a savepoint and the
event's attempt counted, with exponential backoff, until ``max_attempts``: then it is
``dead`` with its error (``billing-gateway billing stripe retry`` redrives it).

An event that refers to a customer or subscription billing has not seen yet waits for
it (retried with backoff); with ``STRIPE_SECRET_KEY`` the object is fetched from Stripe
instead, as is the object of two events from the same second.

It wakes when the webhook endpoint of its process stores an event, and otherwise polls
every ``idle_s``. Its database work runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billing_gateway.billing.schema import stripe_events
from billing_gateway.billing.store import BillingStore, NotYet
from billing_gateway.billing.store.base import utc
from billing_gateway.billing.workers.errors import one_line

from .gateway import PaymentGateway
from .handlers import Ambiguous, Applied, adopt, apply
from .metrics import StripeMetrics
from .objects import decode_event
from .settings import StripeSettings

__all__ = ["StripeWorker"]

log = logging.getLogger(__name__)
T = stripe_events


class StripeWorker:
    def __init__(
        self,
        store: BillingStore,
        settings: StripeSettings,
        gateway: PaymentGateway | None = None,
        metrics: StripeMetrics | None = None,
        *,
        max_attempts: int = 10,
        backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
    ) -> None:
        self.store = store
        self.settings = settings
        self.gateway = gateway
        self.metrics = metrics or StripeMetrics()
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Called (from any thread) when an event was stored."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event, idle_s: float = 0.5) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        failing = False
        while not stop.is_set():
            self._wake.clear()
            try:
                while not stop.is_set() and await asyncio.to_thread(self.process_one):
                    pass
                if failing:
                    log.info("applying Stripe events works again")
                failing = False
            except Exception as exc:  # the database, most likely: retried after idle_s
                if not failing:
                    log.error("applying Stripe events failed (%s); retrying", one_line(exc))
                failing = True
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waiters, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    def drain(self) -> int:
        """Applies every due event now; how many (tests, benchmarks)."""
        done = 0
        while self.process_one():
            done += 1
        return done

    def process_one(self) -> bool:
        """Claims, applies and marks one due event; whether there was one."""
        with self.store.transaction() as conn:
            row = self._claim(conn)
            if row is None:
                return False
            self._process(conn, row)
        return True

    def _claim(self, conn: Connection) -> Any:
        query = (
            sa.select(T.c.seq, T.c.event_id, T.c.event_type, T.c.payload, T.c.attempts, T.c.received_at)
            .where(T.c.status == "pending", T.c.next_attempt_at <= self.store.clock())
            .order_by(T.c.seq)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        return conn.execute(query).mappings().first()

    def _process(self, conn: Connection, row: Any) -> None:
        try:
            with conn.begin_nested():
                done = self._apply(conn, bytes(row["payload"]))
        except Exception as exc:
            self._failed(conn, row, one_line(exc))
            return
        now = self.store.clock()
        conn.execute(
            T.update()
            .where(T.c.seq == row["seq"])
            .values(status=done.status, processed_at=now, attempts=row["attempts"] + 1, last_error=None)
        )
        self.store.audit_stripe_event(
            conn, row["event_id"], row["event_type"], self._object_id(row), done.outcome, done.customer_id
        )
        self.metrics.webhook(row["event_type"], "stale" if done.outcome.startswith("stale") else done.status)
        self.metrics.latency(max(0.0, (now - utc(row["received_at"])).total_seconds()))

    @staticmethod
    def _object_id(row: Any) -> str | None:
        return decode_event(bytes(row["payload"])).object_id

    def _apply(self, conn: Connection, payload: bytes, fetches: int = 3) -> Applied:
        """Applies an event; with a gateway, fetches from Stripe what its order or its
        references leave unknown (a customer or subscription not synced yet)."""
        event = decode_event(payload)
        prices = self.settings.price_map
        try:
            return apply(self.store, conn, event, prices, can_fetch=self.gateway is not None)
        except Ambiguous as tie:
            assert self.gateway is not None
            fetched = self.gateway.retrieve(tie.kind, tie.object_id)
            return apply(self.store, conn, event, prices, fetched=fetched)
        except NotYet as missing:
            if self.gateway is None or fetches == 0:
                raise
            adopt(
                self.store,
                conn,
                missing.kind,
                self.gateway.retrieve(missing.kind, missing.object_id),
                prices,
                event.id,
            )
            return self._apply(conn, payload, fetches - 1)

    def _failed(self, conn: Connection, row: Any, error: str) -> None:
        attempts = row["attempts"] + 1
        values: dict[str, Any] = {"attempts": attempts, "last_error": error[:2000]}
        if attempts >= self.max_attempts:
            values["status"] = "dead"
            log.error("Stripe event %s is dead after %d attempts: %s", row["event_id"], attempts, error)
            self.store.audit_stripe_event(
                conn, row["event_id"], row["event_type"], self._object_id(row), f"dead: {error}", None
            )
            self.metrics.webhook(row["event_type"], "dead")
        else:
            delay = min(self.max_backoff_s, self.backoff_s * 2.0 ** (attempts - 1))
            values["next_attempt_at"] = self.store.clock() + timedelta(seconds=delay)
            log.warning("Stripe event %s failed (attempt %d): %s", row["event_id"], attempts, error)
            self.metrics.webhook(row["event_type"], "failed")
        conn.execute(T.update().where(T.c.seq == row["seq"]).values(**values))
