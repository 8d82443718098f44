"""Following one JetStream stream from a cursor, in order, through restarts and outages.

A :class:`StreamFollower` owns the NATS side of live sync and nothing else: the
connection, its own ephemeral ordered push consumer starting right after the cursor
(never a shared work queue, which would split messages between replicas), and the
watch over both. It hands every message past the cursor to ``handle`` in stream order
and then advances the cursor to the message's stream sequence.

The consumer is re-created from ``cursor + 1`` whenever deliveries stop (missed idle
heartbeats: a server restart, a lost consumer) or skip (a delivery count that does not
match), and anything at or below the cursor is skipped, so a rebuild never hands a
message over twice. Two ways the stream can fail the cursor are reported:

- a **gap** (``on_gap``): retention dropped messages right after the cursor;
- a **reset** (``on_reset``): the stream was deleted and created again, or wiped (its
  creation time differs from the one the cursor counted in, or its last sequence is
  behind the cursor), so the cursor means nothing in it any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from .connection import connect
from .gateway import ack_info
from .stream import StreamSettings, ensure_stream

__all__ = ["StreamFollower"]

log = logging.getLogger(__name__)

_MISSED_HEARTBEATS = 3

Handler = Callable[[Msg, int], Awaitable[None]]
"""``handle(message, stream_sequence)``: runs once per message past the cursor, in order."""


class StreamFollower:
    """Hands every message of ``stream`` after ``cursor`` to ``handle``, in order, live."""

    def __init__(
        self,
        nats_url: str,
        handle: Handler,
        *,
        cursor: int = 0,
        stream: str,
        subjects: str,
        name: str = "billing-gateway",
        heartbeat_s: float = 1.0,
        stream_settings: StreamSettings | None = None,
        stream_created: datetime | None = None,
        on_gap: Callable[[int], None] | None = None,
        on_reset: Callable[[int], None] | None = None,
    ) -> None:
        """``on_gap(first)``: the stream now starts at ``first`` > cursor + 1.
        ``on_reset(resume_after)``: the stream was recreated or wiped; following it again
        from its start means :meth:`restart_from` ``resume_after``."""
        if heartbeat_s <= 0:
            raise ValueError("heartbeat_s must be positive")
        self.nats_url = nats_url
        self.handle = handle
        self.cursor = cursor
        """The stream sequence of the last message handled."""
        self.stream = stream
        self.subjects = subjects
        self.name = name
        self.heartbeat_s = heartbeat_s
        self.stream_settings = stream_settings
        self.stream_created = stream_created
        """When the stream the cursor counts in was created (kept beside snapshots)."""
        self.on_gap = on_gap
        self.on_reset = on_reset

        self.gap_detected = False
        """Set when the stream no longer holds messages right after the cursor, or was reset."""
        self.consumer_rebuilds = 0
        self.lag: int | None = None
        """Messages in the stream not yet handled (None until first measured)."""
        self.last_event_ns: int | None = None
        self.caught_up_once = False
        self.connected = False
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None

        self._sub: Subscription | None = None
        self._consumer_name: str | None = None
        self._delivered = 0
        self._last_activity = time.monotonic()
        self._rebuilding = asyncio.Lock()
        self._watchdog: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.nc = await connect(self.nats_url, name=self.name, on_change=self._on_connection)
        self.connected = True
        self.js = self.nc.jetstream(timeout=5.0)
        info = await ensure_stream(self.js, self.stream, self.subjects, self.stream_settings)
        if self.stream_created is None and self.cursor == 0:
            self.stream_created = info.created
        await self._rebuild("start")
        await self.refresh()
        self._watchdog = asyncio.create_task(self._watch(), name=f"{self.name}-watchdog")

    async def stop_delivery(self) -> None:
        """Stops deliveries (the message in hand finishes first)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.drain()  # type: ignore[no-untyped-call]
            self._sub = None

    async def close(self) -> None:
        """Deletes this process's consumer and drains the connection."""
        if self.nc is not None:
            if self._consumer_name and self.js is not None:
                with contextlib.suppress(Exception):
                    await self.js.delete_consumer(self.stream, self._consumer_name)
            with contextlib.suppress(Exception):
                await self.nc.drain()
            self.nc = None
        self.connected = False

    async def restart_from(self, cursor: int, why: str) -> None:
        """Follows the stream again from ``cursor + 1`` (after a reset)."""
        self.cursor = cursor
        await self._rebuild(why)

    # ---- the consumer ----------------------------------------------------------------

    async def _rebuild(self, why: str) -> None:
        """(Re)creates this process's consumer, starting right after the cursor."""
        assert self.nc is not None and self.js is not None
        async with self._rebuilding:
            if self._sub is not None:
                with contextlib.suppress(Exception):
                    await self._sub.unsubscribe()
            if self._consumer_name is not None:
                with contextlib.suppress(Exception):
                    await self.js.delete_consumer(self.stream, self._consumer_name)
            inbox = self.nc.new_inbox()
            self._sub = await self.nc.subscribe(inbox, cb=self._on_message)
            config = ConsumerConfig(
                name=f"{self.name}-{self.nc._nuid.next().decode()}",
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
            await self.js.add_consumer(self.stream, config)
            if why != "start":
                self.consumer_rebuilds += 1
                log.warning("consumer re-created from stream sequence %d (%s)", config.opt_start_seq, why)

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
            return  # already handled before a rebuild
        if sseq > self.cursor + 1 and not self.gap_detected:
            await self._check_gap(sseq)
        await self.handle(msg, sseq)
        self.cursor = sseq
        self.last_event_ns = timestamp_ns
        self.lag = pending  # the server's count; refresh() adds what is delivered but not handled
        if pending == 0:
            self.caught_up_once = True

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

    async def _check_gap(self, next_seq: int) -> None:
        """A jump in stream sequence is a gap only if retention dropped the messages."""
        await self.refresh()
        if not self.gap_detected:
            log.info("stream sequences %d..%d were deleted individually", self.cursor + 1, next_seq - 1)

    def _schedule_rebuild(self, why: str) -> None:
        if not self._rebuilding.locked():
            asyncio.get_running_loop().create_task(self._rebuild(why))

    # ---- watching --------------------------------------------------------------------

    async def _watch(self) -> None:
        seen = self._delivered
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                if self._delivered != seen:  # messages count as activity, like heartbeats
                    seen, self._last_activity = self._delivered, time.monotonic()
                if time.monotonic() - self._last_activity > _MISSED_HEARTBEATS * self.heartbeat_s:
                    if self.connected:
                        await self._rebuild("missed heartbeats")
                else:
                    await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("watchdog: %s", exc)

    async def refresh(self) -> None:
        """Re-reads the stream's bounds and this consumer's backlog; reports gaps and resets."""
        assert self.js is not None
        # Messages keep arriving while the answer is on its way: a stream wiped since is
        # one whose last sequence is below where this gateway was when it asked.
        asked_at = self.cursor
        info = await self.js.stream_info(self.stream)
        first, last, messages = info.state.first_seq, info.state.last_seq, info.state.messages
        known = self.stream_created
        recreated = info.created is not None and known is not None and info.created != known
        if recreated or last < asked_at:
            self._reset(info.created, first, last, "recreated" if recreated else "wiped")
            return
        if self.stream_created is None:
            self.stream_created = info.created
        if messages > 0 and first > self.cursor + 1 and not self.gap_detected:
            self.gap_detected = True
            log.error(
                "GAP: the stream %s starts at sequence %d but this gateway is at %d: events "
                "%d..%d are gone (retention). The table is NOT current.",
                self.stream, first, self.cursor, self.cursor + 1, first - 1,
            )  # fmt: skip
            if self.on_gap is not None:
                self.on_gap(first)
        try:
            assert self._consumer_name is not None
            consumer = await self.js.consumer_info(self.stream, self._consumer_name)
        except (AssertionError, NotFoundError):
            # Our consumer is gone (the server restarted): measure against the stream, rebuild.
            self.lag = max(0, last - self.cursor)
            self._schedule_rebuild("consumer not found")
            return
        # Not yet delivered, plus delivered (or in flight) but not yet handled.
        delivered = consumer.delivered.stream_seq if consumer.delivered else 0
        self.lag = (consumer.num_pending or 0) + max(0, (delivered or 0) - self.cursor)
        if self.lag == 0:
            self.caught_up_once = True

    def _reset(self, created: datetime | None, first: int, last: int, how: str) -> None:
        if self.gap_detected and self.stream_created == created:
            return  # already reported
        self.gap_detected = True
        log.error(
            "STREAM RESET: the stream %s was %s (now sequences %d..%d, created %s) but this "
            "gateway is at %d. The table is NOT current; following the new stream from its start.",
            self.stream, how, first, last, created, self.cursor,
        )  # fmt: skip
        self.stream_created = created
        if self.on_reset is not None:
            self.on_reset(max(0, first - 1) if last else 0)

    def recovered(self) -> None:
        """The caller repaired the table: ready again once caught up with the stream."""
        self.gap_detected = False
        self.caught_up_once = False

    async def _on_connection(self, connected: bool) -> None:
        self.connected = connected
        if not connected:
            self.lag = None  # unknown until measured again
