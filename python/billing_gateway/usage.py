"""Gateway → billing: committed spend, reported as ``usage.reported`` events.

``UsageReporter`` periodically drains ``gateway.drain_usage()`` and publishes one event
per record to the billing stream. The event id is derived from the record's
idempotency key, so a republished record is dropped by the broker, and billing
records it exactly once (by that key) in any case. A record whose publish fails is
kept in ``unsent`` and retried on the next round; the daemon keeps ``unsent`` in its
snapshots, so records drained before a restart are reported after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterable
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
    """Reports the gateway's committed spend. ``js`` may be set later (``reporter.js = …``):
    until then nothing is drained, so the usage stays in the gateway's journal."""

    def __init__(
        self,
        gateway: Gateway,
        js: JetStreamContext | None = None,
        *,
        interval_s: float = 10.0,
        unsent: Iterable[UsageRecord] = (),
        on_drained: Callable[[], None] | None = None,
    ) -> None:
        """``on_drained`` runs after each drain that returned records, before they are
        published: the daemon writes a snapshot there, so that a record is never both
        published and still in the journal of the snapshot a restart would restore."""
        self.gateway = gateway
        self.on_drained = on_drained
        self.js = js
        self.interval_s = interval_s
        self.unsent: list[UsageRecord] = list(unsent)
        self.published = 0
        self.failing = False

    async def report_once(self) -> int:
        """Drains the gateway and publishes every record not yet sent; returns how many went out."""
        if self.js is None:
            return 0
        drained = self.gateway.drain_usage()
        if drained:
            self.unsent.extend(drained)
            if self.on_drained is not None:
                self.on_drained()
        sent = 0
        while self.unsent:
            try:
                await publish_event(self.js, usage_event(self.unsent[0]))
            except Exception as exc:
                if not self.failing:
                    log.warning("usage not reported yet (%d records waiting): %s", len(self.unsent), exc)
                self.failing = True
                break
            self.unsent.pop(0)
            sent += 1
        if sent and self.failing and not self.unsent:
            log.info("usage reporting resumed")
            self.failing = False
        self.published += sent
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Reports every ``interval_s`` until ``stop`` is set, then once more."""
        while not stop.is_set():
            await self.report_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
        await self.report_once()
