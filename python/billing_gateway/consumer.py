"""Live sync: a Gateway follows the billing event stream on NATS JetStream.

Every process holds a full replica of the table, so every process reads every event:
each EventConsumer creates its own ephemeral, ordered consumer on the stream, starting
right after its gateway's cursor (never a shared work queue, which would split events
between replicas). It applies each message in stream order and advances the cursor
to the message's stream sequence.

The consumer is rebuilt from ``cursor + 1`` whenever deliveries stop (missed idle
heartbeats: a server restart, a lost consumer) or skip (a consumer sequence out of
order); anything at or below the cursor is skipped, so a rebuild never applies an
event twice. A message that cannot be decoded or applied, or that is larger than
``max_payload``, is copied to the dead-letter subject with the reason, and the
consumer moves on: it never crashes, never stalls the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from .errors import BillingGatewayError, InvalidEvent, ParkingFull
from .gateway import Gateway, ack_info
from .models import ApplyOutcome
from .snapshots import SnapshotStore
from .stream import (
    DLQ_SUBJECT,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    StreamSettings,
    ensure_dlq_stream,
    ensure_stream,
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


_MISSED_HEARTBEATS = 3


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
        stream_settings: StreamSettings | None = None,
        name: str = "billing-gateway",
        on_applied: Callable[[int, ApplyOutcome | None], None] | None = None,
    ) -> None:
        """``on_applied(stream_sequence, outcome)`` runs after each message, on the consumer's
        event loop (``outcome`` is None for a dead-lettered message); keep it quick."""
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
        self.stream_settings = stream_settings
        self.name = name
        self.on_applied = on_applied
        self._apply = gateway.apply

        self.cursor = gateway.cursor
        """The stream sequence of the last message applied (or dead-lettered)."""
        self._tally = [0] * len(_OUTCOMES)
        self.dead_lettered: Counter[str] = Counter()
        """Dead-lettered messages by kind: oversized, invalid_event, parking_full, internal."""
        self.dlq_failures = 0
        self.gap_detected = False
        """Set when the stream no longer holds events right after the cursor."""
        self.consumer_rebuilds = 0
        self.snapshots_written = 0

        self._lag: int | None = None
        self._last_event_ns: int | None = None
        self._caught_up_once = False
        self._connected = False
        self._stopping = False
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._sub: Subscription | None = None
        self._consumer_name: str | None = None
        self._delivered = 0
        self._last_activity = time.monotonic()
        self._snapshot_cursor = self.cursor
        self._tasks: list[asyncio.Task[None]] = []
        self._rebuilding = asyncio.Lock()
        self._thread: threading.Thread | None = None
        self._thread_stop: Callable[[], None] | None = None

    @classmethod
    def from_snapshot(cls, snapshots: SnapshotStore, nats_url: str, **options: object) -> EventConsumer:
        """A consumer for the gateway in ``snapshots`` (a new gateway when there is none),
        resuming the stream right after the snapshot's cursor."""
        return cls(snapshots.load_or_new(), nats_url, snapshots=snapshots, **options)  # type: ignore[arg-type]

    @property
    def outcomes(self) -> Counter[ApplyOutcome]:
        """Events applied so far, by outcome."""
        return Counter({o: n for o, n in zip(_OUTCOMES, self._tally, strict=True) if n})

    # ---- freshness -------------------------------------------------------------------

    @property
    def lag(self) -> int | None:
        """Messages in the stream not yet applied (None until first measured)."""
        return self._lag

    @property
    def staleness_s(self) -> float | None:
        """Age of the last applied event (by its stream timestamp), in seconds."""
        if self._last_event_ns is None:
            return None
        return max(0.0, time.time() - self._last_event_ns / 1e9)

    @property
    def connected(self) -> bool:
        return self._connected

    def is_current(self) -> bool:
        """Connected, caught up with the stream, and no gap: the table is as fresh as billing."""
        return self._connected and not self.gap_detected and self._lag == 0

    @property
    def ready(self) -> bool:
        """Has caught up with the stream since start, and has seen no gap."""
        return self._caught_up_once and not self.gap_detected

    async def wait_until_current(self, timeout: float = 10.0) -> None:
        """Waits until everything the stream holds now has been applied."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):
                await self._refresh()
            if self.is_current():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not current after {timeout}s (lag={self._lag}, gap={self.gap_detected}, "
                    f"connected={self._connected})"
                )
            await asyncio.sleep(0.01)

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._nc = await nats.connect(
            self.nats_url,
            name=self.name,
            max_reconnect_attempts=2,  # fail start() clearly when NATS is not there ...
            reconnect_time_wait=0.25,
            connect_timeout=2,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            error_cb=self._on_error,
        )
        self._nc.options["max_reconnect_attempts"] = -1  # ... but once connected, never give up
        self._connected = True
        self._js = self._nc.jetstream(timeout=5.0)
        await ensure_stream(self._js, self.stream, self.subjects, self.stream_settings)
        if self.dlq_subject.startswith("billing.dlq."):
            await ensure_dlq_stream(self._js)
        await self._rebuild("start")
        await self._refresh()
        self._tasks = [asyncio.create_task(self._watch(), name="billing-gateway-watchdog")]
        if self.snapshots is not None and self.snapshot_every_s:
            self._tasks.append(asyncio.create_task(self._snapshot_loop(), name="billing-gateway-snapshots"))

    async def stop(self) -> None:
        """Finishes the message in hand, writes a final snapshot, drains the connection."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.drain()  # type: ignore[no-untyped-call]
            self._sub = None
        self._snapshot(force=True)
        self._stopping = True
        if self._nc is not None:
            if self._consumer_name and self._js is not None:
                with contextlib.suppress(Exception):
                    await self._js.delete_consumer(self.stream, self._consumer_name)
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None
        self._connected = False

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

    # ---- the consumer ----------------------------------------------------------------

    async def _rebuild(self, why: str) -> None:
        """(Re)creates this process's consumer, starting right after the cursor."""
        assert self._nc is not None and self._js is not None
        async with self._rebuilding:
            if self._sub is not None:
                with contextlib.suppress(Exception):
                    await self._sub.unsubscribe()
            if self._consumer_name is not None:
                with contextlib.suppress(Exception):
                    await self._js.delete_consumer(self.stream, self._consumer_name)
            inbox = self._nc.new_inbox()
            self._sub = await self._nc.subscribe(inbox, cb=self._on_message)
            config = ConsumerConfig(
                name=f"{self.name}-{self._nc._nuid.next().decode()}",
                deliver_subject=inbox,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self.cursor + 1,
                ack_policy=AckPolicy.NONE,
                filter_subject=self.subjects,
                flow_control=True,
                idle_heartbeat=self.heartbeat_s,
                inactive_threshold=max(30.0, 10 * self.heartbeat_s),
                mem_storage=True,
                num_replicas=1,
            )
            # Named before it exists: messages still arriving from the old one are ignored.
            self._consumer_name = config.name
            self._delivered = 0
            self._last_activity = time.monotonic()
            await self._js.add_consumer(self.stream, config)
            if why != "start":
                self.consumer_rebuilds += 1
                log.warning("consumer re-created from stream sequence %d (%s)", self.cursor + 1, why)

    async def _on_message(self, msg: Msg) -> None:
        # This runs once per event: it is written for speed (see benches/test_bench_sync.py).
        ack = ack_info(msg.reply, self._consumer_name or "")
        if ack is None:
            if not msg.reply.startswith("$JS.ACK."):
                await self._on_status(msg)  # an idle heartbeat or a flow-control request
            return  # otherwise, a message from a consumer this one replaced
        sseq, _, timestamp_ns, pending = ack
        self._delivered += 1
        if sseq <= self.cursor:
            return  # already applied before a rebuild
        if sseq > self.cursor + 1 and not self.gap_detected:
            await self._check_gap(sseq)
        data = msg.data
        outcome: ApplyOutcome | None = None
        try:
            if len(data) > self.max_payload:
                raise _Oversized(f"{len(data)} bytes > max_payload {self.max_payload}")
            outcome = self._apply(data)
            self._tally[_OUTCOME_INDEX[id(outcome)]] += 1
        except Exception as exc:
            await self._dead_letter(msg, sseq, *_dead_letter_kind(exc))
        self.cursor = sseq
        self._last_event_ns = timestamp_ns
        self._lag = pending  # the server's count; _refresh adds what is delivered but not applied
        if pending == 0:
            self._caught_up_once = True
        if self.on_applied is not None:
            try:
                self.on_applied(sseq, outcome)
            except Exception:
                log.exception("on_applied raised at stream sequence %d", sseq)

    async def _on_status(self, msg: Msg) -> None:
        self._last_activity = time.monotonic()
        headers = msg.headers or {}
        if headers.get("Status") != "100":
            return
        if msg.reply:  # flow control: the server waits for this answer
            await msg.respond(b"")
        last = headers.get("Nats-Last-Consumer")
        if last is not None and int(last) != self._delivered:
            self._schedule_rebuild(f"the server delivered {last} messages, {self._delivered} arrived")

    async def _dead_letter(self, msg: Msg, sseq: int, kind: str, reason: str) -> None:
        self.dead_lettered[kind] += 1
        log.warning("dead-lettering stream sequence %d on %s: %s: %s", sseq, msg.subject, kind, reason)
        headers = {
            "Nats-Msg-Id": f"{self.stream}:{sseq}",
            "Billing-Gateway-Dlq-Kind": kind,
            "Billing-Gateway-Dlq-Reason": header_value(reason),
            "Billing-Gateway-Original-Subject": msg.subject,
            "Billing-Gateway-Stream": self.stream,
            "Billing-Gateway-Stream-Sequence": str(sseq),
        }
        try:
            assert self._js is not None
            await self._js.publish(self.dlq_subject, msg.data, headers=headers, timeout=5.0)
        except Exception as exc:
            # The original stays in the stream at its sequence; nothing is lost, but say so.
            self.dlq_failures += 1
            log.error("could not dead-letter stream sequence %d: %s", sseq, exc)

    async def _check_gap(self, next_seq: int) -> None:
        """A jump in stream sequence is a gap only if retention dropped the events."""
        await self._refresh()
        if not self.gap_detected:
            log.info("stream sequences %d..%d were deleted individually", self.cursor + 1, next_seq - 1)

    def _schedule_rebuild(self, why: str) -> None:
        if not self._rebuilding.locked():
            asyncio.get_running_loop().create_task(self._rebuild(why))

    # ---- housekeeping ----------------------------------------------------------------

    async def _watch(self) -> None:
        seen = self._delivered
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                if self._delivered != seen:  # messages count as activity, like heartbeats
                    seen, self._last_activity = self._delivered, time.monotonic()
                if time.monotonic() - self._last_activity > _MISSED_HEARTBEATS * self.heartbeat_s:
                    if self._connected:
                        await self._rebuild("missed heartbeats")
                else:
                    await self._refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("watchdog: %s", exc)

    async def _refresh(self) -> None:
        """Re-reads the stream's bounds and this consumer's backlog."""
        assert self._js is not None
        info = await self._js.stream_info(self.stream)
        first, messages = info.state.first_seq, info.state.messages
        if messages > 0 and first > self.cursor + 1 and not self.gap_detected:
            self.gap_detected = True
            log.error(
                "GAP: the stream %s starts at sequence %d but this gateway is at %d: events "
                "%d..%d are gone (retention). The table is NOT current; rebuild it from billing.",
                self.stream, first, self.cursor, self.cursor + 1, first - 1,
            )  # fmt: skip
        try:
            assert self._consumer_name is not None
            consumer = await self._js.consumer_info(self.stream, self._consumer_name)
        except (AssertionError, NotFoundError):
            # Our consumer is gone (the server restarted): measure against the stream, rebuild.
            self._lag = max(0, info.state.last_seq - self.cursor)
            self._schedule_rebuild("consumer not found")
            return
        # Not yet delivered, plus delivered (or in flight) but not yet applied.
        delivered = consumer.delivered.stream_seq if consumer.delivered else 0
        self._lag = (consumer.num_pending or 0) + max(0, (delivered or 0) - self.cursor)
        if self._lag == 0:
            self._caught_up_once = True

    def clear_gap(self) -> None:
        """Declares the gap repaired (after the table was rebuilt from billing)."""
        self.gap_detected = False

    async def _snapshot_loop(self) -> None:
        assert self.snapshot_every_s
        while True:
            await asyncio.sleep(self.snapshot_every_s)
            try:
                self._snapshot()
            except OSError as exc:
                log.error("could not write the snapshot: %s", exc)

    def _snapshot(self, force: bool = False) -> None:
        """Writes a snapshot if anything was applied since the last one. Runs on the event
        loop between messages, so the snapshot and its cursor always agree."""
        if self.snapshots is None:
            return
        if self.cursor == self._snapshot_cursor and (not force or self.snapshots.path.exists()):
            return
        size = self.snapshots.save(self.gateway, self.cursor)
        self.snapshots_written += 1
        self._snapshot_cursor = self.cursor
        log.debug("snapshot at cursor %d (%d bytes)", self.cursor, size)

    async def _on_disconnected(self) -> None:
        self._connected = False
        self._lag = None  # unknown until measured again
        if not self._stopping:
            log.warning("disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        self._connected = True
        log.info("reconnected to NATS")

    async def _on_error(self, exc: Exception) -> None:
        log.debug("nats: %s", exc)
