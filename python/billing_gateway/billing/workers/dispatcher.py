"""The outbox dispatcher: publishes ``billing_events`` rows to NATS JetStream.

It claims pending rows, publishes each with ``Nats-Msg-Id = event_id`` and marks it
published. On PostgreSQL the claim is ``SELECT … FOR UPDATE SKIP LOCKED`` inside the
transaction that marks the rows, so several dispatchers never hold the same row. On
SQLite it is one atomic ``UPDATE … RETURNING`` that leases the rows for ``lease_s``.

A crash between publish and mark leaves the row pending (or its lease expires), so it
is published again: only ever a duplicate, which the broker's ``Nats-Msg-Id`` window
and the consumers' dedupe absorb; never a loss.

A failed publish is one of two things:

- the broker's **verdict** on the message (a JetStream API error such as "message too
  large" or "wrong expected sequence", or a message the client refuses to send):
  the row's attempt is counted, it is retried with exponential backoff, and after
  ``max_attempts`` it is parked as ``dead`` with its last error
  (``billing-gateway billing outbox list`` / ``redrive``). "No stream for the subject"
  is one too, unless ``create_missing_stream`` (the default): then the dispatcher
  creates the event stream (after the broker's store was wiped, say) and retries;
- a **transport** failure (timeout, connection refused or closed, no responders,
  reconnecting): not the event's fault. No attempt is counted. The broker is marked
  unreachable (one log line), and until it answers again the dispatcher sends only the
  oldest due row, at capped exponential intervals, so that the rows reach the stream
  in outbox order once it is back (one log line, with the number of rows waiting).

An unreachable database is handled the same way: one line when it goes, one when it
is back, capped exponential retries in between.

The dispatcher wakes as soon as an outbox row commits instead of polling for it: in
process, the store tells it after every commit that wrote to the outbox; on PostgreSQL
the writing transaction also sends ``NOTIFY billing_outbox``, which the dispatcher
LISTENs for on a connection of its own, so rows written by other processes wake it
too. ``idle_s`` remains as a slow fallback poll (rows due later, SQLite writers in
other processes). Its database work runs on worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import psycopg
import sqlalchemy as sa
from nats.errors import BadHeaderError, BadSubjectError, MaxPayloadError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError, ServiceUnavailableError
from sqlalchemy.engine import Connection

from billing_gateway.billing.schema import WRITE, tables
from billing_gateway.billing.store import OUTBOX_CHANNEL, BillingStore
from billing_gateway.stream import EVENTS_STREAM, ensure_stream, event_subject

from .errors import one_line

__all__ = ["Dispatcher", "DispatcherStats"]

log = logging.getLogger(__name__)
_R = TypeVar("_R")
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
    counted: bool
    """The broker's verdict on the message: counts an attempt."""
    reachable: bool = True
    """The broker answered (with a verdict, or as to why it could not take the message)."""


def _unreachable(error: str) -> _Failure:
    return _Failure(error, counted=False, reachable=False)


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
        create_missing_stream: bool = True,
    ) -> None:
        """``backoff_s``/``max_backoff_s`` space a rejected row's attempts;
        ``backoff_s``/``max_retry_interval_s`` space the retries while the broker or the
        database is unreachable. With ``create_missing_stream`` (the default) the dispatcher
        creates the event stream when the broker has none for a subject (its store was
        wiped, or the stream deleted) and publishes into it; without, that is a rejection."""
        self.store = store
        self.js = js
        self.batch = batch
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.lease_s = lease_s
        self.publish_timeout_s = publish_timeout_s
        self.create_missing_stream = create_missing_stream
        self._creating_stream = asyncio.Lock()
        self.stats = DispatcherStats()
        self.broker = _Outage("broker", backoff_s, max_retry_interval_s)
        self.database = _Outage("outbox database", backoff_s, max_retry_interval_s)
        self._broker_down_s = 0.0

    async def dispatch_once(self) -> int:
        """Publishes up to ``batch`` due rows (only the oldest while the broker is
        unreachable); returns how many were published or rejected."""
        limit = 1 if self.broker.down else self.batch
        started = time.monotonic()
        if self.store.engine.dialect.name == "postgresql":  # claimed and marked in one transaction
            conn = await asyncio.to_thread(self.store.engine.connect)
            try:
                tx = await asyncio.to_thread(conn.begin)
                rows = await asyncio.to_thread(self._select_due, conn, limit)
                results = await self._publish_all(rows)
                await asyncio.to_thread(self._mark_unsynced, conn, rows, results)
                await asyncio.to_thread(tx.commit)
            finally:
                await asyncio.to_thread(conn.close)  # rolls back what was not committed
        else:
            rows = await asyncio.to_thread(self._in_transaction, self._lease_due, limit)
            results = await self._publish_all(rows)
            await asyncio.to_thread(self._in_transaction, self._mark, rows, results)
        if self._track_broker(results, started):
            waiting = (await asyncio.to_thread(self.store.outbox_state)).counts.get("pending", 0)
            log.info("broker back after %.1f s; %d rows waiting", self._broker_down_s, waiting)
        return sum(1 for r in results if r is None or r.counted)

    def _in_transaction(self, work: Callable[..., _R], *args: Any) -> _R:
        """``work`` in a SQLite transaction whose commit does not wait for the disk
        (``synchronous=NORMAL``; the domain's own writes keep ``FULL``). In WAL mode such a
        commit survives a crash of any process; only a power loss can undo it, and an undone
        lease or mark only makes a row publish again: a duplicate, which the broker's
        ``Nats-Msg-Id`` window and the consumers' dedupe absorb. It keeps the disk's flush
        (milliseconds on some disks) out of the way between a commit and its event."""
        with self.store.writing(), self.store.engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            sqlite = cast(sqlite3.Connection, conn.connection.driver_connection)
            (synchronous,) = sqlite.execute("PRAGMA synchronous").fetchone()
            sqlite.execute("PRAGMA synchronous=NORMAL")
            try:
                with conn.begin():
                    return work(conn, *args)
            finally:
                sqlite.execute(f"PRAGMA synchronous={int(synchronous)}")

    async def run(self, stop: asyncio.Event, idle_s: float = 0.2) -> None:
        """Dispatches until ``stop`` is set. Nothing due, it waits for an outbox commit (or
        ``idle_s`` at most); longer (capped exponential) while the broker or the database is
        unreachable."""
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        unsubscribe = self.store.on_outbox_commit(lambda: loop.call_soon_threadsafe(wake.set))
        listener = (
            asyncio.create_task(self._listen(wake, stop))
            if self.store.engine.dialect.name == "postgresql"
            else None
        )
        try:
            await self._run(stop, wake, idle_s)
        finally:
            unsubscribe()
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener

    async def _listen(self, wake: asyncio.Event, stop: asyncio.Event) -> None:
        """Sets ``wake`` on every ``NOTIFY`` of the outbox channel (other processes' commits),
        on a connection of its own; reconnects after a failure, the fallback poll covering
        the gap."""
        url = self.store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
                    wake.set()  # whatever committed before we listened
                    async for _ in conn.notifies():
                        wake.set()
            except psycopg.Error:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.database.delay_s or 1.0)

    async def _run(self, stop: asyncio.Event, wake: asyncio.Event, idle_s: float) -> None:
        while not stop.is_set():
            wake.clear()
            started = time.monotonic()
            try:
                handled = await self.dispatch_once()
            except DATABASE_ERRORS as exc:
                self.database.failed(one_line(exc), started)
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
                if self.broker.down or self.database.down:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), pause)
                else:
                    await _first(stop, wake, timeout=pause)

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
        error = one_line(exc)
        if isinstance(exc, NoStreamResponseError):
            # "No responders": no stream for the subject, or a stream that is not
            # answering right now (transport). Ask the broker which.
            try:
                await self.js.find_stream_name_by_subject(subject)
            except NotFoundError:
                return await self._no_stream(subject)
            except Exception:  # the lookup did not get through either
                return _unreachable(error)
            return _unreachable(error)
        if isinstance(exc, MESSAGE_ERRORS) or (
            isinstance(exc, APIError) and not isinstance(exc, ServiceUnavailableError)
        ):
            return _Failure(error, counted=True)
        return _unreachable(error)

    async def _no_stream(self, subject: str) -> _Failure:
        """No stream takes ``subject``: create the event stream (once for the whole batch)
        and have the row retried at once, or count the attempt."""
        missing = f"no stream for subject {subject}"
        if not self.create_missing_stream:
            return _Failure(missing, counted=True)
        async with self._creating_stream:
            try:
                with contextlib.suppress(NotFoundError):  # another row of the batch created it
                    await self.js.find_stream_name_by_subject(subject)
                    return _Failure(f"{missing}; created it", counted=False)
                await ensure_stream(self.js)
                await self.js.find_stream_name_by_subject(subject)
            except Exception as exc:
                return _Failure(
                    f"{missing}, and creating {EVENTS_STREAM} failed: {one_line(exc)}", counted=True
                )
        log.warning(
            "%s (the broker's store was wiped, or the stream deleted): created %s", missing, EVENTS_STREAM
        )
        return _Failure(f"{missing}; created it", counted=False)

    def _track_broker(self, results: list[_Failure | None], started: float) -> bool:
        """Whether the broker just came back (after ``_broker_down_s``)."""
        if not results:
            return False
        unreachable = [r for r in results if r is not None and not r.reachable]
        if len(unreachable) == len(results):
            self.broker.failed(unreachable[0].error, started)
            return False
        down_s = self.broker.recovered()  # any answer, ack or verdict, means it is reachable
        if down_s is None:
            return False
        self._broker_down_s = down_s
        return True

    # ---- marking --------------------------------------------------------------------------

    def _mark(self, conn: Connection, rows: list[Any], results: list[_Failure | None]) -> None:
        now = self.store.clock()
        published = [row["seq"] for row, r in zip(rows, results, strict=True) if r is None]
        if published:  # one statement for the batch
            done = T.update().where(T.c.seq.in_(published))
            conn.execute(done.values(status="published", published_at=now, lease_until=None))
            self.stats.published += len(published)
        unsent = [(row, r) for row, r in zip(rows, results, strict=True) if r is not None and not r.counted]
        if unsent:  # not the rows' fault: released as they were, attempts untouched
            self.stats.transport_failures += sum(1 for _, r in unsent if not r.reachable)
            conn.execute(
                T.update()
                .where(T.c.seq.in_([row["seq"] for row, _ in unsent]))
                .values(lease_until=None, last_error=unsent[0][1].error[:2000])
            )
        for row, r in zip(rows, results, strict=True):
            if r is None or not r.counted:
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

    def _mark_unsynced(self, conn: Connection, rows: list[Any], results: list[_Failure | None]) -> None:
        """``_mark`` in a PostgreSQL transaction whose commit does not wait for the disk: a
        mark lost to a crash of the server only makes its row publish again (a duplicate)."""
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
        self._mark(conn, rows, results)

    def pending(self) -> dict[str, int]:
        """Rows by status (``pending``, ``published``, ``dead``)."""
        counts: dict[str, int] = self.store.outbox_state().counts
        return counts


async def _first(stop: asyncio.Event, wake: asyncio.Event, timeout: float) -> None:
    """Returns when ``stop`` or ``wake`` is set, or after ``timeout``."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _backoff(first_s: float, max_s: float, failures: int) -> float:
    """``first_s`` after the first failure, doubling after each next one, at most ``max_s``."""
    return min(max_s, first_s * 2.0 ** max(0, failures - 1))
