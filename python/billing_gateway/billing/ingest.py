"""Billing consumes the gateways' ``usage.reported`` events into usage records, exactly once.

A durable JetStream consumer (one for the billing service, however many replicas it
runs) acknowledges a message only after its usage record is committed; the record's
unique idempotency key makes a redelivery a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from billing_gateway.errors import InvalidEvent
from billing_gateway.events import UsageReported, decode_event
from billing_gateway.stream import EVENTS_STREAM, ensure_stream, event_subject

from .domain import BillingError
from .store import BillingStore

__all__ = ["UsageIngestor"]

log = logging.getLogger(__name__)


class UsageIngestor:
    def __init__(self, store: BillingStore, js: JetStreamContext, *, durable: str = "billing-usage") -> None:
        self.store = store
        self.js = js
        self.durable = durable
        self.recorded = 0
        self.duplicates = 0
        self.rejected = 0

    async def run(self, stop: asyncio.Event, batch: int = 100) -> None:
        await ensure_stream(self.js)
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=event_subject("usage.reported"),
            max_deliver=20,
        )
        sub = await self.js.pull_subscribe(
            event_subject("usage.reported"), self.durable, EVENTS_STREAM, config
        )
        while not stop.is_set():
            try:
                messages = await sub.fetch(batch, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            for msg in messages:
                if self.ingest(msg.data):
                    await msg.ack()
                else:
                    await msg.nak(delay=1.0)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

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
            self.rejected += 1
            log.error("usage event rejected: %s", exc)
            return True  # retrying cannot help; it stays in the stream for inspection
        except Exception as exc:
            log.warning("usage not recorded yet: %s", exc)
            return False
        if created:
            self.recorded += 1
        else:
            self.duplicates += 1
        return True
