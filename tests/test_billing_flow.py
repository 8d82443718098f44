"""The outbox dispatcher and the loops around it, against real databases and a real nats-server."""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
import sqlalchemy as sa
from billing_gateway import Gateway, to_micros
from billing_gateway.billing.schema import tables
from billing_gateway.billing.store import BillingStore
from billing_gateway.billing.workers.dispatcher import Dispatcher
from billing_gateway.billing.workers.ingest import UsageIngestor
from billing_gateway.consumer import EventConsumer
from billing_gateway.events import encode_event
from billing_gateway.models import UsageRecord
from billing_gateway.natsd import EmbeddedNats
from billing_gateway.stream import EVENTS_STREAM, ensure_stream
from billing_gateway.usage import UsageReporter, usage_event
from nats.js import JetStreamContext

from .conftest import POSTGRES_URL, Service


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path / "nats") as s:
        yield s


def run(body: Any) -> Any:
    return asyncio.run(asyncio.wait_for(body, 120))


def populate(store: BillingStore, customers: int = 5) -> list[str]:
    store.create_plan(plan_id="plan_pro", name="Pro", currency="USD", included_budget=to_micros(100), price=0)
    subs = []
    for i in range(customers):
        customer = store.create_customer(f"C{i}", f"c{i}@x.io")
        subs.append(store.create_subscription(customer.id, "plan_pro").id)
        store.update_subscription(subs[-1], total_budget=to_micros(10 + i))
    return subs


def outbox_ids(store: BillingStore) -> list[str]:
    return [msgspec.json.decode(p)["event_id"] for _, p in store.list_events(limit=100_000)]


async def stream_ids(js: JetStreamContext) -> list[str]:
    info = await js.stream_info(EVENTS_STREAM)
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        ids.append(msgspec.json.decode((await js.get_msg(EVENTS_STREAM, seq)).data or b"{}")["event_id"])
    return ids


def test_dispatcher_publishes_the_outbox_and_gateways_follow(
    store: BillingStore, nats_server: EmbeddedNats
) -> None:
    subs = populate(store)

    async def body() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await ensure_stream(js)
        dispatcher = Dispatcher(store, js, batch=7)
        while await dispatcher.dispatch_once():
            pass
        assert dispatcher.pending() == {"published": len(outbox_ids(store))}
        assert await stream_ids(js) == outbox_ids(store), "published once each, in outbox order"
        gw = Gateway()
        consumer = EventConsumer(gw, nats_server.url)
        await consumer.start()
        await consumer.wait_until_current()
        assert len(gw) == len(subs)
        assert sorted(b.total for b in gw.budgets()) == [to_micros(10 + i) for i in range(len(subs))]
        await consumer.stop()
        await nc.close()

    run(body())


def test_failed_publishes_back_off_then_go_dead(store: BillingStore, nats_server: EmbeddedNats) -> None:
    populate(store, customers=1)
    now = [store.clock()]
    store.clock = lambda: now[0]

    async def body() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()  # no stream exists, and the dispatcher may not create one: a rejection
        dispatcher = Dispatcher(
            store, js, max_attempts=3, backoff_s=10, publish_timeout_s=0.5, create_missing_stream=False
        )
        total = len(outbox_ids(store))
        assert await dispatcher.dispatch_once() == total
        assert await dispatcher.dispatch_once() == 0, "backing off: nothing is due"
        now[0] += timedelta(seconds=10)
        assert await dispatcher.dispatch_once() == total
        now[0] += timedelta(seconds=15)
        assert await dispatcher.dispatch_once() == 0, "the second delay doubled"
        now[0] += timedelta(seconds=10)
        assert await dispatcher.dispatch_once() == total
        assert dispatcher.pending() == {"dead": total}
        assert dispatcher.stats.dead == total and dispatcher.stats.failures == 3 * total
        await nc.close()

    run(body())


def test_a_crash_between_publish_and_mark_only_duplicates(
    store: BillingStore, nats_server: EmbeddedNats
) -> None:
    populate(store, customers=3)

    class CrashAfterPublish(Dispatcher):
        def _mark(self, *args: Any) -> None:
            raise SystemExit("killed between publish and mark")

    async def body() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await ensure_stream(js)
        with pytest.raises(SystemExit):
            await CrashAfterPublish(store, js, lease_s=0.01).dispatch_once()
        await asyncio.sleep(0.02)  # the SQLite lease runs out; PostgreSQL rolled back
        again = Dispatcher(store, js)
        while await again.dispatch_once():
            pass
        total = len(outbox_ids(store))
        assert again.stats.duplicates == total, "everything was republished, and the broker dropped it"
        assert await stream_ids(js) == outbox_ids(store), "none lost, none twice"
        await nc.close()

    run(body())


def test_two_dispatchers_never_publish_the_same_row(store: BillingStore, nats_server: EmbeddedNats) -> None:
    populate(store, customers=60)
    published: Counter[str] = Counter()

    class Counting(Dispatcher):
        async def _publish(self, row: Any) -> str | None:
            published[row["event_id"]] += 1
            await asyncio.sleep(0)  # let the other dispatcher claim in between
            return await super()._publish(row)

    async def body() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await ensure_stream(js)
        stop = asyncio.Event()
        # One engine, two dispatchers: each claim takes its own pooled connection and transaction.
        a, b = Counting(store, js, batch=5), Counting(store, js, batch=5)
        runs = [asyncio.create_task(d.run(stop, idle_s=0.01)) for d in (a, b)]
        deadline = time.monotonic() + 30
        while a.pending().get("pending") and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.gather(*runs)
        assert set(published.values()) == {1}, "no row was published by both"
        assert a.stats.published > 0 and b.stats.published > 0, "both did work"
        assert len(published) == len(outbox_ids(store))
        await nc.close()

    run(body())


def test_kill_9_dispatcher_processes_lose_nothing(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    db = str(tmp_path / "billing.db")
    store = BillingStore.open(db)
    populate(store, customers=100)
    command = [sys.executable, "-m", "billing_gateway.cli", "--nats-url", nats_server.url,
               "billing", "--db", db, "dispatch"]  # fmt: skip
    rng = random.Random(5)
    for i in range(8):
        log = open(tmp_path / "dispatch.log", "ab")  # noqa: SIM115
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(rng.uniform(0.3, 1.2))
        process.send_signal(signal.SIGKILL)
        process.wait()
        log.close()
        store.create_customer(f"late{i}", "late@x.io")  # new events arrive between crashes
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if Dispatcher(store, None).pending() == {"published": len(outbox_ids(store))}:  # type: ignore[arg-type]
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0

    async def check() -> None:
        nc = await nats.connect(nats_server.url)
        assert await stream_ids(nc.jetstream()) == outbox_ids(store)
        await nc.close()

    run(check())


def test_end_to_end_through_the_api(service: Service, nats_server: EmbeddedNats) -> None:
    """Client → billing → outbox → dispatcher → stream → gateway; and the usage back."""

    async def body() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await ensure_stream(js)
        stop = asyncio.Event()
        loops = [
            asyncio.create_task(Dispatcher(service.store, js).run(stop, idle_s=0.02)),
            asyncio.create_task(UsageIngestor(service.store, js).run(stop)),
        ]
        gw = Gateway()
        consumer = EventConsumer(gw, nats_server.url, heartbeat_s=0.2)
        await consumer.start()

        async def follow(check: Any) -> None:
            deadline = time.monotonic() + 10
            while not check() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert check()

        with service.client() as c:
            c.create_plan(id="plan_pro", name="Pro", currency="USD", included_budget="10", price="5")
            c.create_plan(id="plan_team", name="Team", currency="USD", included_budget="50", price="20")
            customer = c.create_customer("Acme", "a@acme.io")
            sub = c.create_subscription(customer.id, "plan_pro")
            await follow(lambda: gw.budget(customer.id) is not None)
            assert gw.budget(customer.id).total == to_micros(10)  # type: ignore[union-attr]

            c.update_subscription(sub.id, plan_id="plan_team")
            await follow(lambda: gw.budget(customer.id).plan_id == "plan_team")  # type: ignore[union-attr]
            assert gw.try_spend(customer.id, to_micros(42))

            reporter = UsageReporter(gw, js)
            assert await reporter.report_once() == 1
            assert await reporter.report_once() == 0, "drained once"
            await follow(lambda: _usage(service.store) == [to_micros(42)])

            end = c.get_subscription(sub.id).period_end
            (invoice,) = service.store.close_due_cycles(auto_pay=False, now=end)
            lines = [(line.kind, line.amount) for line in c.list_invoices(customer.id)[0].lines]
            assert lines == [("plan", Decimal("20")), ("usage", Decimal("0"))], (
                "42 is within the budget of 50"
            )
            c.pay_invoice(invoice.id)
            await follow(lambda: gw.budget(customer.id).period_start == end)  # type: ignore[union-attr]
            assert gw.budget(customer.id).spent == 0  # type: ignore[union-attr]

            c.cancel_subscription(sub.id)
            await follow(lambda: gw.budget(customer.id).status == "canceled")  # type: ignore[union-attr]
            assert not gw.try_spend(customer.id, 1)

        stop.set()
        await asyncio.gather(*loops)
        await consumer.stop()
        await nc.close()

    run(body())


def _usage(store: BillingStore) -> list[int]:
    with store.engine.connect() as conn:
        return [int(a) for a in conn.execute(sa.select(tables["usage_records"].c.amount)).scalars()]


def test_usage_ingestion_is_exactly_once(store: BillingStore) -> None:
    (sub,) = populate(store, customers=1)
    ingestor = UsageIngestor(store, None)  # type: ignore[arg-type]

    start = store.get_subscription(sub).period_start  # type: ignore[union-attr]
    record = UsageRecord("cus", sub, 1234, start, "usage:abc:1:sub:1")
    payload = encode_event(usage_event(record))
    assert ingestor.ingest(payload) and ingestor.ingest(payload)
    assert (ingestor.recorded, ingestor.duplicates) == (1, 1)
    assert _usage(store) == [1234]
    assert ingestor.ingest(b"{garbage") and ingestor.rejected == 1


async def _until(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert check()


def test_a_broker_outage_longer_than_the_retry_budget_parks_nothing(
    store: BillingStore, nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped for far longer than max_attempts x backoff, restarted on the same port and store:
    every row is published after the restart, none is dead, in outbox order, with one log line
    for the outage and one for the recovery."""
    populate(store, customers=3)
    caplog.set_level(logging.INFO, logger="billing_gateway.billing.workers.dispatcher")

    async def body() -> None:
        nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        js = nc.jetstream()
        await ensure_stream(js)
        dispatcher = Dispatcher(
            store, js, max_attempts=3, backoff_s=0.05, max_backoff_s=0.2, publish_timeout_s=0.3
        )
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop, idle_s=0.02))
        await _until(lambda: dispatcher.pending() == {"published": len(outbox_ids(store))})
        nats_server.stop()
        for i in range(20):  # written while the broker is down
            store.create_customer(f"outage{i}", "o@x.io")
        await asyncio.sleep(3.0)  # old budget: 3 attempts of 0.3 s plus 0.35 s of backoff
        assert "dead" not in dispatcher.pending()
        nats_server.start()
        await _until(lambda: dispatcher.pending() == {"published": len(outbox_ids(store))})
        stop.set()
        await running
        assert dispatcher.stats.dead == 0 and dispatcher.stats.failures == 0
        assert await stream_ids(js) == outbox_ids(store), "each once, in outbox order"
        await nc.close()

    run(body())
    records = [r for r in caplog.records if r.name == "billing_gateway.billing.workers.dispatcher"]
    lines = [r.getMessage() for r in records]
    assert len(lines) == 2 and not [r for r in records if r.exc_info], lines
    assert lines[0].startswith("broker unreachable since "), lines
    assert lines[1].startswith("broker back after ") and "19 rows waiting" in lines[1], lines


def test_a_message_the_broker_refuses_goes_dead_while_the_rest_flow(
    store: BillingStore, nats_server: EmbeddedNats
) -> None:
    """A rejection is the message's fault: it counts attempts and goes dead with the error;
    it does not make the broker look unreachable, and the rows after it are published."""
    populate(store, customers=2)
    huge = b'{"event_id":"evt_huge","pad":"' + b"x" * 2_000_000 + b'"}'  # over max_payload (1 MB)
    with store.engine.begin() as conn:
        now = store.clock()
        conn.execute(
            tables["billing_events"]
            .insert()
            .values(event_id="evt_huge", event_type="customer.created", payload=huge, status="pending",
                    attempts=0, next_attempt_at=now, created_at=now)
        )  # fmt: skip
    store.create_customer("after", "after@x.io")

    async def body() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await ensure_stream(js)
        dispatcher = Dispatcher(store, js, max_attempts=3, backoff_s=0.01, max_backoff_s=0.02)
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop, idle_s=0.01))
        await _until(lambda: "pending" not in dispatcher.pending())
        stop.set()
        await running
        assert dispatcher.pending() == {"published": len(outbox_ids(store)) - 1, "dead": 1}
        stats = dispatcher.stats
        assert (stats.failures, stats.dead, stats.transport_failures) == (3, 1, 0)
        assert not dispatcher.broker.down
        with store.engine.connect() as conn:
            events = tables["billing_events"]
            attempts, error = conn.execute(
                sa.select(events.c.attempts, events.c.last_error).where(events.c.status == "dead")
            ).one()
        assert attempts == 3 and error.startswith("MaxPayloadError"), error
        await nc.close()

    run(body())


def test_the_dispatch_command_rides_out_a_broker_outage(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    """``billing dispatch`` as a process: the broker is stopped for longer than the default
    retry budget of a rejected row would last, rows are written meanwhile, and the broker comes
    back on the same port with the same store: all published, none dead, one line each way."""
    db = str(tmp_path / "billing.db")
    store = BillingStore.open(db)
    populate(store, customers=2)
    log_path = tmp_path / "dispatch.log"
    command = [sys.executable, "-m", "billing_gateway.cli", "--nats-url", nats_server.url,
               "billing", "--db", db, "dispatch"]  # fmt: skip

    def all_published() -> bool:
        return Dispatcher(store, None).pending() == {"published": len(outbox_ids(store))}  # type: ignore[arg-type]

    def wait(check: Any) -> None:
        deadline = time.monotonic() + 60
        while not check() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert check(), log_path.read_text()

    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait(all_published)
        nats_server.stop()
        for i in range(10):
            store.create_customer(f"outage{i}", "o@x.io")
        wait(lambda: "broker unreachable since" in log_path.read_text())
        time.sleep(6)  # longer than a publish timeout: the probe fails again, counting nothing
        assert Dispatcher(store, None).pending().get("dead") is None  # type: ignore[arg-type]
        nats_server.start()
        wait(all_published)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    logged = log_path.read_text().splitlines()
    lines = [line for line in logged if "logger=billing_gateway.billing.workers.dispatcher" in line]
    assert len(lines) == 2, lines
    assert "broker unreachable since" in lines[0] and "broker back after" in lines[1], lines

    async def check() -> None:
        nc = await nats.connect(nats_server.url)
        assert await stream_ids(nc.jetstream()) == outbox_ids(store)
        await nc.close()

    run(check())


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_an_unavailable_outbox_database_is_logged_once_each_way(
    store: BillingStore, nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    """Another session holds the outbox table locked past the dispatcher's lock timeout: every
    dispatcher query fails for two seconds. One line when it goes, one when it is back."""
    caplog.set_level(logging.INFO, logger="billing_gateway.billing.workers.dispatcher")
    with store.engine.connect() as conn:
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
    impatient = BillingStore.open(
        POSTGRES_URL, connect_args={"options": f"-csearch_path={schema} -clock_timeout=50"}
    )
    locked, released = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with store.engine.begin() as conn:
            conn.execute(sa.text("LOCK TABLE billing_events IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            released.wait(10)

    async def body() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await ensure_stream(js)
        dispatcher = Dispatcher(impatient, js, backoff_s=0.05, max_retry_interval_s=0.2)
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop, idle_s=0.02))
        holder = threading.Thread(target=hold_the_lock)
        holder.start()
        await asyncio.to_thread(locked.wait, 10)
        await asyncio.sleep(2.0)
        assert dispatcher.database.failures >= 5, "it kept retrying"
        released.set()
        await asyncio.to_thread(holder.join, 10)
        populate(store, customers=2)
        await _until(lambda: dispatcher.pending() == {"published": len(outbox_ids(store))})
        stop.set()
        await running
        await nc.close()

    try:
        run(body())
    finally:
        released.set()
        impatient.engine.dispose()
    records = [r for r in caplog.records if r.name == "billing_gateway.billing.workers.dispatcher"]
    lines = [r.getMessage() for r in records]
    assert len(lines) == 2 and not [r for r in records if r.exc_info], lines
    assert lines[0].startswith("outbox database unreachable since") and "lock timeout" in lines[0], lines
    assert lines[1].startswith("outbox database back after"), lines


def test_a_wiped_broker_store_gets_its_stream_back_and_nothing_goes_dead(
    store: BillingStore, nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker is stopped, its store emptied, and restarted: the stream is gone. The
    dispatcher creates it again (one warning) instead of parking every later event as dead."""
    populate(store, customers=2)
    caplog.set_level(logging.INFO, logger="billing_gateway.billing.workers.dispatcher")

    async def body() -> None:
        nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        js = nc.jetstream()
        await ensure_stream(js)
        dispatcher = Dispatcher(
            store, js, max_attempts=3, backoff_s=0.05, max_backoff_s=0.1, publish_timeout_s=0.3
        )
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop, idle_s=0.02))
        await _until(lambda: dispatcher.pending() == {"published": len(outbox_ids(store))})
        before = len(outbox_ids(store))
        nats_server.stop()
        shutil.rmtree(nats_server.data_dir / "jetstream")
        nats_server.start()
        await _until(lambda: nc.is_connected)
        for i in range(5):
            store.create_customer(f"after{i}", "a@x.io")
        await _until(lambda: dispatcher.pending() == {"published": len(outbox_ids(store))})
        stop.set()
        await running
        assert dispatcher.stats.dead == 0
        assert await stream_ids(js) == outbox_ids(store)[before:], "the new stream has the new rows, in order"
        await nc.close()

    run(body())
    created = [r.getMessage() for r in caplog.records if "created BILLING_EVENTS" in r.getMessage()]
    assert len(created) == 1, created


def _usage_payload(store: BillingStore, sub: str, key: str, amount: int = 1_000) -> bytes:
    start = store.get_subscription(sub).period_start  # type: ignore[union-attr]
    return encode_event(usage_event(UsageRecord("cus", sub, amount, start, key)))


def test_the_usage_ingestor_survives_a_wiped_broker_store(
    store: BillingStore, nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker is stopped, its store emptied, and restarted: the stream and the durable
    consumer are gone. The ingestor creates both again (one line each way) and records the
    usage published afterwards, instead of dying."""
    (sub,) = populate(store, customers=1)
    caplog.set_level(logging.INFO, logger="billing_gateway.billing.workers.ingest")

    async def body() -> None:
        nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        js = nc.jetstream()
        await ensure_stream(js)
        ingestor = UsageIngestor(store, js)
        stop = asyncio.Event()
        running = asyncio.create_task(ingestor.run(stop, retry_s=0.1))
        await js.publish("billing.events.usage.reported", _usage_payload(store, sub, "before"))
        await _until(lambda: ingestor.recorded == 1)
        nats_server.stop()
        shutil.rmtree(nats_server.data_dir / "jetstream")
        nats_server.start()
        await _until(lambda: nc.is_connected)
        await _until(lambda: "is back" in caplog.text or running.done())
        assert not running.done(), running.exception()
        await js.publish("billing.events.usage.reported", _usage_payload(store, sub, "after"))
        await _until(lambda: ingestor.recorded == 2)
        stop.set()
        await running
        await nc.close()

    run(body())
    assert sorted(_usage(store)) == [1_000, 1_000]
    lines = [r.getMessage() for r in caplog.records if r.name == "billing_gateway.billing.workers.ingest"]
    assert len(lines) == 2, lines
    assert "unavailable" in lines[0] and "is back" in lines[1], lines


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_an_unavailable_database_is_logged_once_by_the_usage_ingestor(
    store: BillingStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Usage redelivered again and again while the database is unavailable (its table held
    locked past the lock timeout) is one warning, and its return one line."""
    (sub,) = populate(store, customers=1)
    caplog.set_level(logging.INFO, logger="billing_gateway.billing.workers.ingest")
    with store.engine.connect() as conn:
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
    impatient = BillingStore.open(
        POSTGRES_URL, connect_args={"options": f"-csearch_path={schema} -clock_timeout=50"}
    )
    ingestor = UsageIngestor(impatient, None)  # type: ignore[arg-type]  # ingest() needs no broker
    payloads = [_usage_payload(store, sub, f"k{i}") for i in range(3)]
    try:
        with store.engine.begin() as conn:
            conn.execute(sa.text("LOCK TABLE usage_records IN ACCESS EXCLUSIVE MODE"))
            for _ in range(3):  # each message redelivered three times
                refused = [ingestor.ingest(p) for p in payloads]
                assert refused == [False] * 3
        assert [ingestor.ingest(p) for p in payloads] == [True] * 3
    finally:
        impatient.engine.dispose()
    assert ingestor.recorded == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "billing_gateway.billing.workers.ingest"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("usage not recorded: database unavailable") and "lock timeout" in lines[0], (
        lines
    )
    assert lines[1] == "usage recorded again: the database is back", lines


def test_the_dispatcher_wakes_when_an_outbox_row_commits(
    store: BillingStore, nats_server: EmbeddedNats
) -> None:
    """With a fallback poll of a minute, a committed row is still published at once: the
    store wakes the dispatcher in process; on PostgreSQL, ``NOTIFY`` also wakes it for
    another process's commit (here another engine, which the in-process signal cannot reach)."""
    other: BillingStore | None = None
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as conn:
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        other = BillingStore.open(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})

    async def body() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await ensure_stream(js)
        dispatcher = Dispatcher(store, js)
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop, idle_s=60.0))
        await asyncio.sleep(0.3)  # idle, and listening
        for writer in [store, other] if other is not None else [store]:
            for i in range(3):
                before = dispatcher.stats.published
                await asyncio.to_thread(writer.create_customer, f"C{i}", "c@x.io")
                await _until(lambda: dispatcher.stats.published > before, timeout=1.0)  # noqa: B023
        stop.set()
        await running
        await nc.close()

    try:
        run(body())
    finally:
        if other is not None:
            other.engine.dispose()
