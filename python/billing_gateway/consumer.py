"""Live sync: a Gateway follows the billing event stream on NATS JetStream.

Every process holds a full replica of the table, so every process reads every event:
each EventConsumer creates its own ephemeral, ordered consumer on the stream, starting
right after its gateway's cursor (never a shared work queue, which would split events
between replicas). It applies each message in stream order and advances the cursor
to the message's stream sequence.

Following the stream (the connection, the ordered consumer, rebuilds, gap and reset
detection) is :class:`~billing_gateway.follower.StreamFollower`'s; this module applies
what it hands over. A message that cannot be decoded or applied, or that is larger than
``max_payload``, is copied to the dead-letter subject with the reason, and the
consumer moves on: it never crashes, never stalls the stream.

Two ways the stream can fail the cursor are detected and repaired:

- a **gap**: retention dropped events right after the cursor (the stream's first
  sequence is beyond it);
- a **reset**: the stream was deleted and created again, or wiped (its creation time
  differs from the one recorded with the cursor, or its last sequence is behind the
  cursor), so the cursor means nothing in it any more.

Either makes the consumer not ready (``/readyz`` 503, the gap metric, an ERROR line).
With ``rebuild_from`` (billing's ``GET /api/v1/budgets``) the table is brought up to date
from billing's current state, then the stream is followed again (from the new stream's
start after a reset). Without it, a reset replays the new stream from its start; a gap
stays reported until :meth:`EventConsumer.clear_gap`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError

from .errors import BillingGatewayError, InvalidEvent, ParkingFull
from .follower import StreamFollower
from .gateway import Gateway
from .models import ApplyOutcome, UsageRecord
from .snapshots import SavedState, SnapshotStore
from .stream import (
    DLQ_SUBJECT,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    StreamSettings,
    ensure_dlq_stream,
    header_value,
)

__all__ = ["DEFAULT_MAX_PAYLOAD", "EventConsumer"]

log = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD = 64 * 1024
_OUTCOMES = tuple(ApplyOutcome)
_OUTCOME_INDEX = {id(o): i for i, o in enumerate(_OUTCOMES)}  # identity: no Enum hashing per event


class _Oversized(Exception):
    pass


def _dead_letter_kind(exc: Exception) -> tuple[str, str]:
    """The dead-letter kind and reason for what applying a message raised."""
    if isinstance(exc, _Oversized):
        return "oversized", str(exc)
    if isinstance(exc, InvalidEvent):
        return "invalid_event", str(exc)
    if isinstance(exc, ParkingFull):
        return "parking_full", str(exc)
    if isinstance(exc, BillingGatewayError):
        return "rejected", f"{type(exc).__name__}: {exc}"
    log.error("unexpected error applying an event", exc_info=exc)  # never stops the stream
    return "internal", f"{type(exc).__name__}: {exc}"


class EventConsumer:
    """Applies the billing event stream to ``gateway``, live.

    In an asyncio application: ``await consumer.start()`` … ``await consumer.stop()``.
    In a threaded one: ``consumer.start_in_thread()`` … ``consumer.stop_in_thread()``.
    Either way the gateway's spend checks never wait for the consumer.
    """

    def __init__(
        self,
        gateway: Gateway,
        nats_url: str = "nats://127.0.0.1:4222",
        *,
        stream: str = EVENTS_STREAM,
        subjects: str = EVENTS_SUBJECTS,
        snapshots: SnapshotStore | None = None,
        snapshot_every_s: float | None = 60.0,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        dlq_subject: str = DLQ_SUBJECT,
        heartbeat_s: float = 1.0,
        summary_every_s: float = 30.0,
        stream_settings: StreamSettings | None = None,
        name: str = "billing-gateway",
        on_applied: Callable[[int, ApplyOutcome | None], None] | None = None,
        stream_created: datetime | None = None,
        rebuild_from: Callable[[], Awaitable[list[bytes]]] | None = None,
        unsent_usage: Callable[[], Sequence[UsageRecord]] | None = None,
    ) -> None:
        """``on_applied(stream_sequence, outcome)`` runs after each message, on the consumer's
        event loop (``outcome`` is None for a dead-lettered message); keep it quick.

        ``stream_created``: the creation time of the stream the cursor belongs to (kept in
        snapshots), to recognise a stream that was recreated. ``rebuild_from``: returns
        events that carry billing's current state (``BillingClient.budget_events``), used to
        repair a gap or a reset. ``unsent_usage``: usage drained from the gateway but not yet
        reported, kept in snapshots so that a restart reports it."""
        if max_payload <= 0 or heartbeat_s <= 0:
            raise ValueError("max_payload and heartbeat_s must be positive")
        self.gateway = gateway
        self.nats_url = nats_url
        self.stream = stream
        self.subjects = subjects
        self.snapshots = snapshots
        self.snapshot_every_s = snapshot_every_s
        self.max_payload = max_payload
        self.dlq_subject = dlq_subject
        self.heartbeat_s = heartbeat_s
        self.summary_every_s = summary_every_s
        self.name = name
        self.on_applied = on_applied
        self.rebuild_from = rebuild_from
        self.unsent_usage = unsent_usage
        self.follower = StreamFollower(
            nats_url,
            self._handle,
            cursor=gateway.cursor,
            stream=stream,
            subjects=subjects,
            name=name,
            heartbeat_s=heartbeat_s,
            stream_settings=stream_settings,
            stream_created=stream_created,
            on_gap=self._on_gap,
            on_reset=self._on_reset,
        )
        self._apply = gateway.apply
        self._debug = log.isEnabledFor(logging.DEBUG)

        self._tally = [0] * len(_OUTCOMES)
        self.dead_lettered: Counter[str] = Counter()
        """Dead-lettered messages by kind: oversized, invalid_event, parking_full, internal."""
        self.dlq_failures = 0
        self.snapshots_written = 0
        self.stream_resets = 0
        """Times the stream was found recreated or wiped behind the cursor."""
        self.table_rebuilds = 0
        """Times the table was brought up to date from ``rebuild_from``."""

        self._snapshot_cursor = gateway.cursor
        self._tasks: list[asyncio.Task[None]] = []
        self._repairing: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._thread_stop: Callable[[], None] | None = None

    @classmethod
    def from_snapshot(cls, snapshots: SnapshotStore, nats_url: str, **options: object) -> EventConsumer:
        """A consumer for the gateway in ``snapshots`` (a new gateway when there is none),
        resuming the stream right after the snapshot's cursor."""
        return cls.from_saved(snapshots.load_state(), nats_url, snapshots=snapshots, **options)

    @classmethod
    def from_saved(cls, saved: SavedState, nats_url: str, **options: object) -> EventConsumer:
        """A consumer for a gateway restored by :meth:`SnapshotStore.load_state`."""
        return cls(saved.gateway, nats_url, stream_created=saved.stream_created, **options)  # type: ignore[arg-type]

    @property
    def outcomes(self) -> Counter[ApplyOutcome]:
        """Events applied so far, by outcome."""
        return Counter({o: n for o, n in zip(_OUTCOMES, self._tally, strict=True) if n})

    # ---- freshness -------------------------------------------------------------------

    @property
    def cursor(self) -> int:
        """The stream sequence of the last message applied (or dead-lettered)."""
        return self.follower.cursor

    @property
    def stream_created(self) -> datetime | None:
        return self.follower.stream_created

    @property
    def gap_detected(self) -> bool:
        """Set when the stream no longer holds events right after the cursor (or was reset)."""
        return self.follower.gap_detected

    @property
    def consumer_rebuilds(self) -> int:
        return self.follower.consumer_rebuilds

    @property
    def lag(self) -> int | None:
        """Messages in the stream not yet applied (None until first measured)."""
        return self.follower.lag

    @property
    def staleness_s(self) -> float | None:
        """Age of the last applied event (by its stream timestamp), in seconds."""
        last = self.follower.last_event_ns
        return None if last is None else max(0.0, time.time() - last / 1e9)

    @property
    def connected(self) -> bool:
        return self.follower.connected

    @property
    def jetstream(self) -> JetStreamContext:
        """The JetStream context of the consumer's connection (after ``start``)."""
        if self.follower.js is None:
            raise RuntimeError("the consumer is not started")
        return self.follower.js

    def is_current(self) -> bool:
        """Connected, caught up with the stream, and no gap: the table is as fresh as billing."""
        f = self.follower
        return f.connected and not f.gap_detected and f.lag == 0

    @property
    def ready(self) -> bool:
        """Connected, has caught up with the stream since start, and has no gap."""
        f = self.follower
        return f.connected and f.caught_up_once and not f.gap_detected

    async def wait_until_current(self, timeout: float = 10.0) -> None:
        """Waits until everything the stream holds now has been applied."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):
                await self.follower.refresh()
            if self.is_current():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not current after {timeout}s (lag={self.lag}, gap={self.gap_detected}, "
                    f"connected={self.connected})"
                )
            await asyncio.sleep(0.01)

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.follower.start()
        if self.dlq_subject.startswith("billing.dlq."):
            await ensure_dlq_stream(self.jetstream)
        self._tasks = [asyncio.create_task(self._summaries(), name="billing-gateway-summaries")]
        if self.snapshots is not None and self.snapshot_every_s:
            self._tasks.append(asyncio.create_task(self._snapshot_loop(), name="billing-gateway-snapshots"))

    async def stop(self) -> None:
        """Finishes the message in hand, writes a final snapshot, drains the connection."""
        for task in [*self._tasks, *([self._repairing] if self._repairing else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks, self._repairing = [], None
        await self.follower.stop_delivery()
        self._snapshot(force=True)
        await self.follower.close()

    def start_in_thread(self, timeout: float = 30.0) -> None:
        """Runs the consumer on its own thread and event loop (for synchronous apps)."""
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            async def main() -> None:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()

                def request_stop() -> None:
                    loop.call_soon_threadsafe(stop.set)

                self._thread_stop = request_stop
                try:
                    await self.start()
                except BaseException as exc:
                    failure.append(exc)
                    started.set()
                    return
                started.set()
                await stop.wait()
                await self.stop()

            asyncio.run(main())

        self._thread = threading.Thread(target=run, name="billing-gateway-consumer", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise TimeoutError(f"the consumer did not start within {timeout}s")
        if failure:
            self._thread.join()
            raise failure[0]

    def stop_in_thread(self, timeout: float = 30.0) -> None:
        if self._thread is None or self._thread_stop is None:
            return
        self._thread_stop()
        self._thread.join(timeout)
        self._thread = None

    # ---- applying --------------------------------------------------------------------

    async def _handle(self, msg: Msg, sseq: int) -> None:
        # This runs once per event: it is written for speed (see benches/test_bench_sync.py).
        data = msg.data
        outcome: ApplyOutcome | None = None
        try:
            if len(data) > self.max_payload:
                raise _Oversized(f"{len(data)} bytes > max_payload {self.max_payload}")
            outcome = self._apply(data)
            self._tally[_OUTCOME_INDEX[id(outcome)]] += 1
        except Exception as exc:
            await self._dead_letter(msg, sseq, *_dead_letter_kind(exc))
        if self._debug:
            log.debug("stream sequence %d on %s: %s", sseq, msg.subject, outcome and outcome.value)
        if self.on_applied is not None:
            try:
                self.on_applied(sseq, outcome)
            except Exception:
                log.exception("on_applied raised at stream sequence %d", sseq)

    async def _dead_letter(self, msg: Msg, sseq: int, kind: str, reason: str) -> None:
        self.dead_lettered[kind] += 1
        created = self.stream_created
        log.warning("dead-lettering stream sequence %d on %s: %s: %s", sseq, msg.subject, kind, reason)
        headers = {
            # One copy whichever replica dead-letters it; a recreated stream (sequences from
            # 1 again) is told apart by its creation time.
            "Nats-Msg-Id": f"{self.stream}:{created.isoformat() if created else '-'}:{sseq}",
            "Billing-Gateway-Dlq-Kind": kind,
            "Billing-Gateway-Dlq-Reason": header_value(reason),
            "Billing-Gateway-Original-Subject": msg.subject,
            "Billing-Gateway-Stream": self.stream,
            "Billing-Gateway-Stream-Sequence": str(sseq),
        }
        try:
            try:
                await self.jetstream.publish(self.dlq_subject, msg.data, headers=headers, timeout=5.0)
            except NoStreamResponseError:
                # Delivery starts before ``start`` creates the dead-letter stream (poison
                # already waiting in the stream), or the stream was deleted since: create
                # it and publish again.
                if not self.dlq_subject.startswith("billing.dlq."):
                    raise
                await ensure_dlq_stream(self.jetstream)
                await self.jetstream.publish(self.dlq_subject, msg.data, headers=headers, timeout=5.0)
        except Exception as exc:
            # The original stays in the stream at its sequence; nothing is lost, but say so.
            self.dlq_failures += 1
            log.error("could not dead-letter stream sequence %d: %s", sseq, exc)

    # ---- repairs ---------------------------------------------------------------------

    def clear_gap(self) -> None:
        """Declares the gap repaired (after the table was rebuilt from billing)."""
        self.follower.gap_detected = False

    def _on_gap(self, first: int) -> None:
        if self.rebuild_from is not None:
            log.warning("rebuilding the table from billing to repair the gap")
            self._start_repair(None)

    def _on_reset(self, resume_after: int) -> None:
        self.stream_resets += 1
        if self.rebuild_from is None:
            log.warning("no billing URL to rebuild the table from: replaying the new stream only")
        self._start_repair(resume_after)

    def _start_repair(self, resume_after: int | None) -> None:
        if self._repairing is None or self._repairing.done():
            self._repairing = asyncio.get_running_loop().create_task(self._repair(resume_after))

    async def _repair(self, resume_after: int | None) -> None:
        """Brings the table up to date from billing (when it can), then follows the stream
        from ``resume_after`` (after a reset) or from where it was (after a gap)."""
        delay = 0.5
        events: list[bytes] = []
        while self.rebuild_from is not None:
            try:
                events = await self.rebuild_from()
                break
            except Exception as exc:
                log.warning("rebuild from billing failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        applied = 0
        for raw in events:
            try:
                applied += self._apply(raw) is ApplyOutcome.APPLIED
            except Exception as exc:
                log.error("rebuild: billing sent an event the table refuses: %s", exc)
        if self.rebuild_from is not None:
            self.table_rebuilds += 1
            log.warning("rebuilt the table from billing: %d events, %d changed it", len(events), applied)
        if resume_after is not None:
            await self.follower.restart_from(resume_after, "stream reset")
        self.follower.recovered()
        await self.follower.refresh()

    # ---- housekeeping ----------------------------------------------------------------

    async def _summaries(self) -> None:
        """An INFO line when the consumer catches up or falls behind, and every
        ``summary_every_s`` while events arrive: events applied by outcome, cursor, lag."""
        reported = list(self._tally)
        was_ready = False
        last_summary = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.summary_every_s))
            if self.ready != was_ready:
                was_ready = self.ready
                if was_ready:
                    log.info(
                        "current with the stream at cursor %d (%d tenants)", self.cursor, len(self.gateway)
                    )
                else:
                    log.warning(
                        "not current: connected=%s, lag=%s, gap=%s",
                        self.connected,
                        self.lag,
                        self.gap_detected,
                    )
            if time.monotonic() - last_summary < self.summary_every_s or self._tally == reported:
                continue
            counts = ", ".join(
                f"{o.value} {n - m}"
                for o, n, m in zip(_OUTCOMES, self._tally, reported, strict=True)
                if n != m
            )
            log.info(
                "events: %s; cursor %d, lag %s, %d tenants", counts, self.cursor, self.lag, len(self.gateway)
            )
            reported, last_summary = list(self._tally), time.monotonic()

    async def _snapshot_loop(self) -> None:
        """Takes a due snapshot on the event loop (between messages, so that it and its
        cursor agree) and writes it on a worker thread (fsyncs are milliseconds on some
        disks, and requests wait for nothing of that)."""
        assert self.snapshot_every_s
        while True:
            await asyncio.sleep(self.snapshot_every_s)
            try:
                taken = self._take_snapshot()
                if taken is not None:
                    cursor, write = taken
                    self._written(cursor, await asyncio.to_thread(write))
            except Exception as exc:  # a full disk must not stop the loop: try again next time
                log.error("could not write the snapshot: %s", exc)

    def save_snapshot(self) -> None:
        """Writes a snapshot now (call it on the consumer's event loop)."""
        self._snapshot(force=True)

    def _snapshot(self, force: bool = False) -> None:
        """Writes a snapshot now if one is due (see ``_take_snapshot``)."""
        taken = self._take_snapshot(force)
        if taken is not None:
            cursor, write = taken
            self._written(cursor, write())

    def _take_snapshot(self, force: bool = False) -> tuple[int, Callable[[], int]] | None:
        """A snapshot if the table changed since the last one (an event applied, a spend,
        a hold, a commit, a drain), or always with ``force``: its cursor and what writes
        it. Runs on the event loop between messages, so the snapshot and its cursor agree."""
        if self.snapshots is None:
            return None
        if not force and self.cursor == self._snapshot_cursor and not self.gateway.dirty:
            return None
        unsent = list(self.unsent_usage()) if self.unsent_usage is not None else []
        return self.cursor, self.snapshots.prepare(self.gateway, self.cursor, self.stream_created, unsent)

    def _written(self, cursor: int, size: int) -> None:
        self.snapshots_written += 1
        self._snapshot_cursor = cursor
        log.debug("snapshot at cursor %d (%d bytes)", cursor, size)
