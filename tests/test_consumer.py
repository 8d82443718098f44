"""EventConsumer against a real nats-server (started per test, on a free port)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from billing_gateway import ApplyOutcome, Gateway, to_micros
from billing_gateway.consumer import EventConsumer
from billing_gateway.natsd import EmbeddedNats
from billing_gateway.snapshots import SnapshotStore
from billing_gateway.stream import DLQ_STREAM, StreamSettings, ensure_stream, publish_event
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from .conftest import NOW, START, created, event, paid, payment_failed, pin, updated

A = ApplyOutcome


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path / "nats") as s:
        yield s


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


async def connect(server: EmbeddedNats) -> tuple[NATS, JetStreamContext]:
    nc = await nats.connect(server.url)
    return nc, nc.jetstream()


async def started(gw: Gateway, server: EmbeddedNats, **options: Any) -> EventConsumer:
    consumer = EventConsumer(gw, server.url, heartbeat_s=0.2, **options)
    await consumer.start()
    return consumer


def test_every_event_type_is_applied(server: EmbeddedNats) -> None:
    async def body() -> None:
        gw = pin(Gateway())
        consumer = await started(gw, server)
        nc, js = await connect(server)
        evs = [
            created(),
            updated(new_total_budget="250", status="trialing", ts=NOW),
            paid(start=START + timedelta(days=30), ts=NOW + timedelta(hours=1)),
            payment_failed(ts=NOW + timedelta(hours=2)),
            event("routing_policy.upserted", {"id": "p", "priority": 1, "match_expression": "true",
                                              "strategy": "failover", "targets": [{"name": "a"}]}),
            event("routing_policy.deleted", {"policy_id": "p"}, ts=NOW + timedelta(hours=3)),
            event("usage.reported", {"tenant_id": "cus_1", "subscription_id": "sub_1", "amount": 5,
                                     "period_start": "2026-06-01T00:00:00Z", "idempotency_key": "k"}),
            event("coupon.created", {"id": "c"}),
        ]  # fmt: skip
        for raw in evs:
            await publish_event(js, raw)
        await consumer.wait_until_current()
        assert consumer.cursor == len(evs)
        assert consumer.outcomes == {A.APPLIED: 6, A.IGNORED: 2}
        assert gw.policies() == [], "upserted, then deleted"
        b = gw.budget("cus_1")
        assert b is not None
        assert (b.total, b.status, b.period_start) == (to_micros(250), "past_due", START + timedelta(days=30))
        assert consumer.is_current() and consumer.ready and not consumer.gap_detected
        assert consumer.lag == 0
        assert consumer.staleness_s is not None and consumer.staleness_s < 60
        await consumer.stop()
        await nc.close()

    run(body)


def test_duplicates_inside_and_after_the_broker_window(server: EmbeddedNats) -> None:
    async def body() -> None:
        nc, js = await connect(server)
        await ensure_stream(js, settings=StreamSettings(duplicate_window_s=0.5))
        gw = pin(Gateway())
        consumer = await started(gw, server)
        first = created(event_id="evt_once")
        assert not (await publish_event(js, first)).duplicate
        assert (await publish_event(js, first)).duplicate, "the broker drops it inside its window"
        await asyncio.sleep(0.7)
        late = await publish_event(js, first)
        assert not late.duplicate, "after the window the broker stores it again"
        await consumer.wait_until_current()
        assert consumer.outcomes == {A.APPLIED: 1, A.DUPLICATE: 1}, "the consumer absorbs it"
        assert consumer.cursor == late.seq == 2
        assert len(gw) == 1
        await consumer.stop()
        await nc.close()

    run(body)


def test_poison_messages_land_in_the_dead_letter_stream(server: EmbeddedNats) -> None:
    async def body() -> None:
        gw = pin(Gateway(max_parked=0))
        consumer = await started(gw, server, max_payload=2048)
        nc, js = await connect(server)
        poison = {
            "billing.events.subscription.created": b"{not json",
            "billing.events.garbage": b"\xff\xfe\x00binary",
            "billing.events.empty": b"",
            "billing.events.invoice.paid": created(total="-5"),
            "billing.events.big": b"{" + b" " * 4096 + b"}",
            "billing.events.subscription.updated": updated("sub_nobody", new_total_budget="1"),
        }
        for subject, payload in poison.items():
            await js.publish(subject, payload)
        await publish_event(js, created())  # a good event after them
        await consumer.wait_until_current()
        assert consumer.cursor == len(poison) + 1
        assert gw.budget("cus_1") is not None, "later good events still apply"
        assert consumer.dead_lettered == {"invalid_event": 4, "oversized": 1, "parking_full": 1}
        assert consumer.dlq_failures == 0
        dlq = await js.stream_info(DLQ_STREAM)
        assert dlq.state.messages == len(poison)
        seen = {}
        for seq in range(1, len(poison) + 1):
            m = await js.get_msg(DLQ_STREAM, seq)
            assert m.headers is not None
            seen[m.headers["Billing-Gateway-Original-Subject"]] = m.headers
            assert (m.data or b"") == poison[m.headers["Billing-Gateway-Original-Subject"]]
            assert m.headers["Billing-Gateway-Stream-Sequence"] == str(seq)
            assert m.headers["Billing-Gateway-Dlq-Reason"]
        assert seen["billing.events.big"]["Billing-Gateway-Dlq-Kind"] == "oversized"
        assert "total_budget" in seen["billing.events.invoice.paid"]["Billing-Gateway-Dlq-Reason"]
        assert seen["billing.events.subscription.updated"]["Billing-Gateway-Dlq-Kind"] == "parking_full"
        await consumer.stop()
        await nc.close()

    run(body)


def test_restart_from_a_snapshot_resumes_exactly_after_its_cursor(
    server: EmbeddedNats, tmp_path: Path
) -> None:
    async def body() -> None:
        store = SnapshotStore(tmp_path / "gw.snap")
        nc, js = await connect(server)
        consumer = EventConsumer.from_snapshot(store, server.url, heartbeat_s=0.2)
        await consumer.start()
        for i in range(20):
            await publish_event(js, created(f"sub_{i}", f"cus_{i}"))
        await consumer.wait_until_current()
        await consumer.stop()  # final snapshot
        assert Gateway.restore(store.path.read_bytes()).cursor == 20
        for i in range(20, 30):
            await publish_event(js, created(f"sub_{i}", f"cus_{i}"))
        again = EventConsumer.from_snapshot(store, server.url, heartbeat_s=0.2)
        assert again.cursor == 20 and len(again.gateway) == 20
        await again.start()
        await again.wait_until_current()
        assert again.outcomes == {A.APPLIED: 10}, "nothing before the cursor is applied again"
        assert len(again.gateway) == 30
        await again.stop()
        await nc.close()

    run(body)


def test_periodic_snapshots(server: EmbeddedNats, tmp_path: Path) -> None:
    async def body() -> None:
        store = SnapshotStore(tmp_path / "gw.snap")
        consumer = await started(Gateway(), server, snapshots=store, snapshot_every_s=0.1)
        nc, js = await connect(server)
        await publish_event(js, created())
        await consumer.wait_until_current()
        deadline = time.monotonic() + 5
        while consumer.snapshots_written == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert Gateway.restore(store.path.read_bytes()).cursor == 1
        await consumer.stop()
        await nc.close()

    run(body)


def test_a_restarted_nats_server_is_caught_up_with(server: EmbeddedNats) -> None:
    async def body() -> None:
        gw = pin(Gateway())
        consumer = await started(gw, server)
        nc, js = await connect(server)
        for i in range(10):
            await publish_event(js, created(f"sub_{i}", f"cus_{i}"))
        await consumer.wait_until_current()
        await nc.close()
        server.stop()
        await asyncio.sleep(0.5)
        assert not consumer.is_current()
        server.start()
        nc, js = await connect(server)
        for i in range(10, 25):
            await publish_event(js, created(f"sub_{i}", f"cus_{i}"))
        await consumer.wait_until_current(timeout=20)
        assert len(gw) == 25
        assert consumer.outcomes == {A.APPLIED: 25}, "nothing applied twice across the restart"
        assert consumer.consumer_rebuilds >= 1
        await consumer.stop()
        await nc.close()

    run(body)


def test_gap_when_retention_dropped_events(server: EmbeddedNats) -> None:
    async def body() -> None:
        nc, js = await connect(server)
        await ensure_stream(js, settings=StreamSettings(max_msgs=5))
        for i in range(12):
            await publish_event(js, created(f"sub_{i}", f"cus_{i}"))
        gw = pin(Gateway())
        consumer = await started(gw, server)
        with pytest.raises(TimeoutError, match="gap=True"):
            await consumer.wait_until_current(timeout=1)
        assert consumer.gap_detected
        assert not consumer.is_current() and not consumer.ready
        assert len(gw) == 5, "it still applies what the stream holds"
        consumer.clear_gap()
        await consumer.wait_until_current()
        await consumer.stop()
        await nc.close()

    run(body)


def test_no_gap_for_a_fresh_stream(server: EmbeddedNats) -> None:
    async def body() -> None:
        consumer = await started(Gateway(), server)
        await consumer.wait_until_current()
        assert not consumer.gap_detected and consumer.ready
        await consumer.stop()

    run(body)


def test_an_event_arriving_while_the_stream_is_measured_is_no_reset(server: EmbeddedNats) -> None:
    """The stream's bounds are a request away: events delivered meanwhile put the cursor
    past the answer's last sequence, and that is not a wiped stream."""

    async def body() -> None:
        nc, js = await connect(server)
        gw = pin(Gateway())
        consumer = await started(gw, server)
        await publish_event(js, created())
        await consumer.wait_until_current()
        follower = consumer.follower
        assert follower.js is not None
        measure = follower.js.stream_info

        async def slow_answer(stream: str, *args: Any, **kwargs: Any) -> Any:
            info = await measure(stream, *args, **kwargs)
            cursor = follower.cursor
            await publish_event(js, updated(new_total_budget="200"))  # delivered meanwhile
            while follower.cursor == cursor:
                await asyncio.sleep(0.01)
            return info

        follower.js.stream_info = slow_answer  # type: ignore[method-assign]
        await follower.refresh()
        follower.js.stream_info = measure  # type: ignore[method-assign]
        assert consumer.stream_resets == 0 and not consumer.gap_detected
        assert gw.budget("cus_1").total == to_micros("200")  # type: ignore[union-attr]
        await consumer.stop()
        await nc.close()

    run(body)


def test_start_in_thread_for_synchronous_apps(server: EmbeddedNats) -> None:
    gw = pin(Gateway())
    consumer = EventConsumer(gw, server.url, heartbeat_s=0.2)
    consumer.start_in_thread()
    try:

        async def publish() -> None:
            nc, js = await connect(server)
            await publish_event(js, created())
            await nc.close()

        asyncio.run(publish())
        deadline = time.monotonic() + 10
        while gw.budget("cus_1") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gw.try_spend("cus_1", 1)
    finally:
        consumer.stop_in_thread()
    assert not consumer.connected


def test_start_in_thread_reports_failure() -> None:
    consumer = EventConsumer(Gateway(), "nats://127.0.0.1:1")
    with pytest.raises(Exception, match=r"(?i)connect|refused|timeout|no servers"):
        consumer.start_in_thread(timeout=15)


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="max_payload"):
        EventConsumer(Gateway(), max_payload=0)
