"""The outbox dispatcher: publishes ``billing_events`` rows to NATS JetStream.

It claims pending rows, publishes each with ``Nats-Msg-Id = event_id`` and marks it
published. On PostgreSQL the claim is ``SELECT … FOR UPDATE SKIP LOCKED`` inside the
transaction that marks the rows, so several dispatchers never hold the same row. On
SQLite it is one atomic ``UPDATE … RETURNING`` that leases the rows for ``lease_s``.

A crash between publish and mark leaves the row pending (or its lease expires), so it
is published again: only ever a duplicate, which the broker's ``Nats-Msg-Id`` window
and the consumers' dedupe absorb; never a loss.

A failed publish is one of two things:

- the broker's **verdict** on the message (a JetStream API error such as "no stream
  for the subject" or "message too large", or a message the client refuses to send):
  the row's attempt is counted, it is retried with exponential backoff, and after
  ``max_attempts`` it is parked as ``dead`` with its last error
  (``billing-gateway billing outbox list`` / ``redrive``);
- a **transport** failure (timeout, connection refused or closed, no responders,
  reconnecting): not the event's fault. No attempt is counted. The broker is marked
  unreachable (one log line), and until it answers again the dispatcher sends only the
  oldest due row, at capped exponential intervals, so that the rows reach the stream
  in outbox order once it is back (one log line, with the number of rows waiting).

An unreachable database is handled the same way: one line when it goes, one when it
is back, capped exponential retries in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from nats.errors import BadHeaderError, BadSubjectError, MaxPayloadError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError, ServiceUnavailableError
from sqlalchemy.engine import Connection

from billing_gateway.stream import event_subject

from .schema import tables
from .store import BillingStore

__all__ = ["Dispatcher", "DispatcherStats"]

log = logging.getLogger(__name__)
T = tables["billing_events"]
ROW = (T.c.seq, T.c.event_id, T.c.event_type, T.c.payload, T.c.attempts)

MESSAGE_ERRORS = (MaxPayloadError, BadSubjectError, BadHeaderError)
"""Errors the client raises about the message itself: as final as the broker's verdict."""

DATABASE_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError)


@dataclass
class DispatcherStats:
    published: int = 0
    duplicates: int = 0
    failures: int = 0
    """Publishes the broker rejected (each counts an attempt)."""
    dead: int = 0
    transport_failures: int = 0
    """Publishes that did not reach the broker (no attempt counted)."""


@dataclass(frozen=True)
class _Failure:
    error: str
    transport: bool


class _Outage:
    """The availability of one dependency: a log line when it goes away and one when it
    is back, and a capped exponential delay between retries meanwhile."""

    def __init__(self, what: str, first_delay_s: float, max_delay_s: float) -> None:
        self.what = what
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.failures = 0
        self._since: float | None = None

    @property
    def down(self) -> bool:
        return self._since is not None

    @property
    def delay_s(self) -> float:
        """How long to wait before the next retry."""
        return _backoff(self.first_delay_s, self.max_delay_s, self.failures)

    def failed(self, error: str, started: float) -> None:
        """A call begun at ``started`` (``time.monotonic()``) did not get through."""
        self.failures += 1
        if self._since is None:
            self._since = started
            wall = datetime.now(UTC) - timedelta(seconds=time.monotonic() - started)
            since = wall.isoformat(timespec="seconds")
            log.warning(
                "%s unreachable since %s (%s); retrying, no attempts counted", self.what, since, error
            )

    def recovered(self) -> float | None:
        """How long it was down, if it was; resets the state."""
        if self._since is None:
            return None
        down_s = time.monotonic() - self._since
        self._since, self.failures = None, 0
        return down_s


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
        max_retry_interval_s: float = 5.0,
        lease_s: float = 30.0,
        publish_timeout_s: float = 5.0,
    ) -> None:
        """``backoff_s``/``max_backoff_s`` space a rejected row's attempts;
        ``backoff_s``/``max_retry_interval_s`` space the retries while the broker or the
        database is unreachable."""
        self.store = store
        self.js = js
        self.batch = batch
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.lease_s = lease_s
        self.publish_timeout_s = publish_timeout_s
        self.stats = DispatcherStats()
        self.broker = _Outage("broker", backoff_s, max_retry_interval_s)
        self.database = _Outage("outbox database", backoff_s, max_retry_interval_s)

    async def dispatch_once(self) -> int:
        """Publishes up to ``batch`` due rows (only the oldest while the broker is
        unreachable); returns how many were published or rejected."""
        limit = 1 if self.broker.down else self.batch
        started = time.monotonic()
        if self.store.engine.dialect.name == "postgresql":
            with self.store.engine.begin() as conn:
                rows = self._select_due(conn, limit)
                results = await self._publish_all(rows)
                self._mark(conn, rows, results)
        else:
            with self.store.engine.begin() as conn:
                rows = self._lease_due(conn, limit)
            results = await self._publish_all(rows)
            with self.store.engine.begin() as conn:
                self._mark(conn, rows, results)
        self._track_broker(results, started)
        return sum(1 for r in results if r is None or not r.transport)

    async def run(self, stop: asyncio.Event, idle_s: float = 0.2) -> None:
        """Dispatches until ``stop`` is set, pausing ``idle_s`` whenever nothing is due,
        and longer (capped exponential) while the broker or the database is unreachable."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                handled = await self.dispatch_once()
            except DATABASE_ERRORS as exc:
                self.database.failed(_one_line(exc), started)
                handled = 0
            else:
                down_s = self.database.recovered()
                if down_s is not None:
                    log.info("outbox database back after %.1f s", down_s)
            if handled == 0:
                pause = max(
                    idle_s,
                    self.broker.delay_s if self.broker.down else 0.0,
                    self.database.delay_s if self.database.down else 0.0,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)

    # ---- claiming -------------------------------------------------------------------------

    def _due(self, limit: int) -> Any:
        now = self.store.clock()
        return (
            sa.select(*ROW)
            .where(T.c.status == "pending", T.c.next_attempt_at <= now)
            .order_by(T.c.seq)
            .limit(limit)
        )

    def _select_due(self, conn: Connection, limit: int) -> list[Any]:
        return list(conn.execute(self._due(limit).with_for_update(skip_locked=True)).mappings())

    def _lease_due(self, conn: Connection, limit: int) -> list[Any]:
        now = self.store.clock()
        claimable = (
            self._due(limit)
            .with_only_columns(T.c.seq)
            .where(sa.or_(T.c.lease_until.is_(None), T.c.lease_until < now))
        )
        leased = conn.execute(
            T.update()
            .where(T.c.seq.in_(claimable.scalar_subquery()))
            .values(lease_until=now + timedelta(seconds=self.lease_s))
            .returning(*ROW)
        ).mappings()
        return sorted(leased, key=lambda r: r["seq"])

    # ---- publishing -----------------------------------------------------------------------

    async def _publish_all(self, rows: list[Any]) -> list[_Failure | None]:
        """Publishes a batch pipelined: sent in outbox order on one connection, acks awaited together."""
        return list(await asyncio.gather(*(self._publish(row) for row in rows)))

    async def _publish(self, row: Any) -> _Failure | None:
        """None when published, else why not."""
        subject = event_subject(row["event_type"])
        try:
            ack = await self.js.publish(
                subject,
                bytes(row["payload"]),
                headers={"Nats-Msg-Id": row["event_id"]},
                timeout=self.publish_timeout_s,
            )
        except Exception as exc:
            return await self._classify(exc, subject)
        if ack.duplicate:
            self.stats.duplicates += 1
        return None

    async def _classify(self, exc: Exception, subject: str) -> _Failure:
        """The broker's verdict on the message, or a transport failure."""
        error = _one_line(exc)
        if isinstance(exc, NoStreamResponseError):
            # "No responders": no stream for the subject (a verdict), or a stream that is
            # not answering right now (transport). Ask the broker which.
            try:
                await self.js.find_stream_name_by_subject(subject)
            except NotFoundError:
                return _Failure(f"no stream for subject {subject}", transport=False)
            except Exception:  # the lookup did not get through either
                return _Failure(error, transport=True)
            return _Failure(error, transport=True)
        verdict = isinstance(exc, MESSAGE_ERRORS) or (
            isinstance(exc, APIError) and not isinstance(exc, ServiceUnavailableError)
        )
        return _Failure(error, transport=not verdict)

    def _track_broker(self, results: list[_Failure | None], started: float) -> None:
        if not results:
            return
        transport = [r for r in results if r is not None and r.transport]
        if len(transport) == len(results):
            self.broker.failed(transport[0].error, started)
            return
        down_s = self.broker.recovered()  # any answer, ack or verdict, means it is reachable
        if down_s is not None:
            waiting = self.store.outbox_state()["counts"].get("pending", 0)
            log.info("broker back after %.1f s; %d rows waiting", down_s, waiting)

    # ---- marking --------------------------------------------------------------------------

    def _mark(self, conn: Connection, rows: list[Any], results: list[_Failure | None]) -> None:
        now = self.store.clock()
        published = [row["seq"] for row, r in zip(rows, results, strict=True) if r is None]
        if published:  # one statement for the batch
            done = T.update().where(T.c.seq.in_(published))
            conn.execute(done.values(status="published", published_at=now, lease_until=None))
            self.stats.published += len(published)
        unsent = [(row, r) for row, r in zip(rows, results, strict=True) if r is not None and r.transport]
        if unsent:  # not the rows' fault: released as they were, attempts untouched
            self.stats.transport_failures += len(unsent)
            conn.execute(
                T.update()
                .where(T.c.seq.in_([row["seq"] for row, _ in unsent]))
                .values(lease_until=None, last_error=unsent[0][1].error[:2000])
            )
        for row, r in zip(rows, results, strict=True):
            if r is None or r.transport:
                continue
            attempts = row["attempts"] + 1
            self.stats.failures += 1
            if attempts >= self.max_attempts:
                self.stats.dead += 1
                log.error("outbox event %s is dead after %d attempts: %s", row["event_id"], attempts, r.error)
                values: dict[str, Any] = {"status": "dead"}
            else:
                delay = _backoff(self.backoff_s, self.max_backoff_s, attempts)
                values = {"next_attempt_at": now + timedelta(seconds=delay)}
                log.warning("outbox event %s rejected (attempt %d): %s", row["event_id"], attempts, r.error)
            conn.execute(
                T.update()
                .where(T.c.seq == row["seq"])
                .values(attempts=attempts, last_error=r.error[:2000], lease_until=None, **values)
            )

    def pending(self) -> dict[str, int]:
        """Rows by status (``pending``, ``published``, ``dead``)."""
        counts: dict[str, int] = self.store.outbox_state()["counts"]
        return counts


def _backoff(first_s: float, max_s: float, failures: int) -> float:
    """``first_s`` after the first failure, doubling after each next one, at most ``max_s``."""
    return min(max_s, first_s * 2.0 ** max(0, failures - 1))


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (driver messages span several)."""
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
