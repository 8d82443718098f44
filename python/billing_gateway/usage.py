"""Gateway → billing: committed spend, reported as ``usage.reported`` events.

``UsageReporter`` periodically drains ``gateway.drain_usage()`` and publishes one event
per record to the billing stream. The event id is derived from the record's
idempotency key, so a republished record is dropped by the broker, and billing
records it exactly once (by that key) in any case. A record whose publish fails is
kept and retried on the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from datetime import UTC, datetime

from nats.js import JetStreamContext

from .events import UsageReported
from .gateway import Gateway
from .models import UsageRecord
from .stream import publish_event

__all__ = ["UsageReporter"]

log = logging.getLogger(__name__)


def usage_event(record: UsageRecord) -> UsageReported:
    digest = hashlib.sha256(record.idempotency_key.encode()).hexdigest()[:32]
    return UsageReported(
        event_id=f"usage_{digest}", timestamp=datetime.now(UTC), tenant_id=record.tenant_id, data=record
    )


class UsageReporter:
    def __init__(self, gateway: Gateway, js: JetStreamContext, *, interval_s: float = 10.0) -> None:
        self.gateway = gateway
        self.js = js
        self.interval_s = interval_s
        self.unsent: list[UsageRecord] = []
        self.published = 0

    async def report_once(self) -> int:
        """Drains the gateway and publishes every record not yet sent; returns how many went out."""
        self.unsent.extend(self.gateway.drain_usage())
        sent = 0
        while self.unsent:
            try:
                await publish_event(self.js, usage_event(self.unsent[0]))
            except Exception as exc:
                log.warning("usage not reported yet (%d records waiting): %s", len(self.unsent), exc)
                break
            self.unsent.pop(0)
            sent += 1
        self.published += sent
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Reports every ``interval_s`` until ``stop`` is set, then once more."""
        while not stop.is_set():
            await self.report_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
        await self.report_once()
