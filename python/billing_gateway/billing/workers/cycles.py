"""The billing-cycle scheduler: closes due cycles every ``every_s`` seconds, its database
work on a worker thread, logging once per state change."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from billing_gateway.billing.store import BillingStore

__all__ = ["run_cycles"]

log = logging.getLogger(__name__)


async def run_cycles(store: BillingStore, stop: asyncio.Event, every_s: float, auto_pay: bool) -> None:
    failing = False
    while not stop.is_set():
        try:
            closed = await asyncio.to_thread(store.close_due_cycles, auto_pay=auto_pay)
            if closed:
                log.info("closed %d billing cycles", len(closed))
            if failing:
                log.info("closing billing cycles works again")
            failing = False
        except Exception as exc:
            if not failing:
                log.error(
                    "closing billing cycles failed (%s: %s); retrying every %.1fs",
                    type(exc).__name__,
                    exc,
                    every_s,
                )
            failing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
