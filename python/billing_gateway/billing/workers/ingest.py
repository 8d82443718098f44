"""Billing consumes the gateways' ``usage.reported`` events into usage records, exactly once.

A durable JetStream consumer (one for the billing service, however many replicas it
runs) acknowledges a message only after its usage record is committed; the record's
unique idempotency key makes a redelivery a no-op. The records are written on a worker
thread, never on the event loop.

Outages are logged once each way, not once per message: a broker that lost its consumer
(its store wiped, the stream deleted) gets the stream and the consumer created again; an
unavailable database leaves the messages unacknowledged, redelivered until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError, ServiceUnavailableError

from billing_gateway.billing.domain import BillingError
from billing_gateway.billing.store import BillingStore
from billing_gateway.errors import InvalidEvent
from billing_gateway.events import UsageReported, decode_event
from billing_gateway.stream import EVENTS_STREAM, ensure_stream, event_subject

from .errors import one_line

__all__ = ["UsageIngestor"]

log = logging.getLogger(__name__)

CONSUMER_GONE = (ServiceUnavailableError, NotFoundError, nats.errors.NoRespondersError)
"""What fetching from a consumer the broker no longer has raises."""


class UsageIngestor:
    def __init__(self, store: BillingStore, js: JetStreamContext, *, durable: str = "billing-usage") -> None:
        self.store = store
        self.js = js
        self.durable = durable
        self.recorded = 0
        self.duplicates = 0
        self.rejected = 0
        self.consumer_lost = False
        self.database_down = False

    async def run(self, stop: asyncio.Event, batch: int = 100, retry_s: float = 0.5) -> None:
        """Ingests until ``stop``, creating the stream and the consumer again whenever the
        broker lost them."""
        while not stop.is_set():
            try:
                sub = await self._subscribe()
            except Exception as exc:  # the broker cannot create it yet
                self._lost(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), retry_s)
                continue
            if self.consumer_lost:
                self.consumer_lost = False
                log.info("usage consumer %s is back", self.durable)
            try:
                await self._consume(sub, stop, batch)
            except CONSUMER_GONE as exc:
                self._lost(exc)
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    def _lost(self, exc: Exception) -> None:
        if not self.consumer_lost:
            self.consumer_lost = True
            log.warning("usage consumer %s unavailable (%s); creating it again", self.durable, one_line(exc))

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        await ensure_stream(self.js)
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=event_subject("usage.reported"),
            max_deliver=20,
        )
        return await self.js.pull_subscribe(
            event_subject("usage.reported"), self.durable, EVENTS_STREAM, config
        )

    async def _consume(self, sub: JetStreamContext.PullSubscription, stop: asyncio.Event, batch: int) -> None:
        while not stop.is_set():
            try:
                messages = await sub.fetch(batch, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            done = await asyncio.to_thread(self._ingest_all, [msg.data for msg in messages])
            for msg, ok in zip(messages, done, strict=True):
                if ok:
                    await msg.ack()
                else:
                    await msg.nak(delay=1.0)

    def _ingest_all(self, payloads: list[bytes]) -> list[bool]:
        return [self.ingest(p) for p in payloads]

    def ingest(self, payload: bytes) -> bool:
        """Records one ``usage.reported``; False to have it redelivered (the store is down)."""
        try:
            event = decode_event(payload)
            if not isinstance(event, UsageReported):
                raise InvalidEvent(f"event_type: expected usage.reported, got {event.event_type}")
            record = event.data
            _, created = self.store.record_usage(
                record.subscription_id, record.amount, record.idempotency_key, record.period_start
            )
        except (InvalidEvent, BillingError) as exc:
            self._database_answered()
            self.rejected += 1
            log.error("usage event rejected: %s", exc)
            return True  # retrying cannot help; it stays in the stream for inspection
        except Exception as exc:
            if not self.database_down:
                self.database_down = True
                log.warning("usage not recorded: database unavailable (%s); retrying", one_line(exc))
            return False
        self._database_answered()
        if created:
            self.recorded += 1
        else:
            self.duplicates += 1
        return True

    def _database_answered(self) -> None:
        if self.database_down:
            self.database_down = False
            log.info("usage recorded again: the database is back")
