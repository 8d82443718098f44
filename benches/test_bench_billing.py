"""Billing-side benchmarks (``make bench``), each beside a NATS-only baseline in the same run.

- API call -> gateway table: latency (p50/p99) and throughput of ``PATCH /subscriptions``
  through a ``billing serve`` process (its API, the outbox and its dispatcher) and the
  stream to this process's table, beside raw NATS publish -> callback;
- dispatcher rows/s on SQLite and PostgreSQL, beside publishing the same payloads
  straight to JetStream (the ceiling).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import sqlalchemy as sa
from billing_gateway import Gateway, to_micros
from billing_gateway.billing.client import AsyncBillingClient
from billing_gateway.billing.store import BillingStore
from billing_gateway.billing.workers.dispatcher import Dispatcher
from billing_gateway.consumer import EventConsumer
from billing_gateway.natsd import EmbeddedNats
from billing_gateway.stream import ensure_stream

from tests.billing_fixtures import BillingServer

from .test_bench_sync import percentiles, publish_and_wait

CALLS = 2_000
ROWS = 5_000
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def server() -> Iterator[EmbeddedNats]:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(Path(tmp)) as s:
        yield s


def one(benchmark: Any, fn: Any) -> Any:
    return benchmark.pedantic(fn, rounds=1, iterations=1)


@pytest.mark.benchmark(group="api_to_gateway")
def test_api_to_gateway__baseline_raw_nats(benchmark: Any, server: EmbeddedNats) -> None:
    async def attach(done: Any) -> Any:
        nc = await nats.connect(server.url)

        async def cb(_: Any) -> None:
            done()

        await nc.subscribe("billing.events.>", cb=cb)
        await nc.flush()  # the server has the subscription before the first publish
        return nc.close

    samples = one(benchmark, lambda: asyncio.run(publish_and_wait(server, attach, "raw")))
    benchmark.extra_info.update(percentiles(samples))


@pytest.mark.benchmark(group="api_to_gateway")
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_api_to_gateway__billing_api(benchmark: Any, server: EmbeddedNats, tmp_path: Path, db: str) -> None:
    """A PATCH through a ``billing serve`` process (API and dispatcher, as deployed; the
    dispatcher woken by the commit) until this process's gateway table shows it."""
    measure_api_to_gateway(benchmark, server, tmp_path, db)


def measure_api_to_gateway(benchmark: Any, server: EmbeddedNats, tmp_path: Path, db: str) -> None:
    with billing_serve(db, tmp_path, server) as (url, key):
        samples, rate = one(benchmark, lambda: asyncio.run(api_to_gateway(server, url, key)))
    benchmark.extra_info.update(percentiles(samples))
    benchmark.extra_info["events_per_s"] = round(rate)


@contextlib.contextmanager
def billing_serve(db: str, tmp_path: Path, server: EmbeddedNats, **env: str) -> Iterator[tuple[str, str]]:
    """A ``billing serve`` process (API, dispatcher and workers, as deployed) on a new
    database: its URL and a key."""
    with database(db, tmp_path) as store:
        _, key = store.create_api_key(["billing:*"])
        url = store.engine.url.render_as_string(hide_password=False)
        billing = BillingServer(url, server.url, tmp_path / "billing.log", **env).launch()
        try:
            billing.ready()
            yield billing.url, key
        finally:
            billing.stop()


class Watch:
    """A gateway following the stream, and an event set when ``wanted(gateway)`` holds
    after an event is applied."""

    def __init__(self, nats_url: str) -> None:
        self.gateway = Gateway()
        self.shown = asyncio.Event()
        self.wanted: Any = lambda _: False
        self.consumer = EventConsumer(self.gateway, nats_url, on_applied=self._applied)

    def _applied(self, _: int, __: Any) -> None:
        if self.wanted(self.gateway):
            self.shown.set()

    async def until(self, wanted: Any, change: Any) -> None:
        """Runs ``await change()`` and returns once ``wanted(gateway)`` holds."""
        self.wanted = wanted
        self.shown.clear()
        await change()
        if not wanted(self.gateway):
            await self.shown.wait()


async def api_to_gateway(server: EmbeddedNats, base_url: str, key: str) -> tuple[list[float], float]:
    client = AsyncBillingClient(base_url, key)
    await client.create_plan(id="plan_pro", name="Pro", currency="USD", included_budget="1", price="1")
    customer = await client.create_customer("Bench", "b@x.io")
    sub = await client.create_subscription(customer.id, "plan_pro")
    watch = Watch(server.url)
    await watch.consumer.start()

    async def change(total: int) -> None:
        def shown(gw: Gateway) -> bool:
            return (b := gw.budget(customer.id)) is not None and b.total == to_micros(total)

        await watch.until(shown, lambda: client.update_subscription(sub.id, total_budget=total))

    await change(2)  # the plan's budget is 1: a change, and the stream is followed
    samples = []
    for i in range(3, CALLS + 3):
        start = time.perf_counter()
        await change(i)
        samples.append(time.perf_counter() - start)
    burst = time.perf_counter()
    last = CALLS + 3 + CALLS
    for i in range(CALLS + 3, last):
        await client.update_subscription(sub.id, total_budget=i)
    await change(last)
    rate = (CALLS + 1) / (time.perf_counter() - burst)
    await watch.consumer.stop()
    await client.aclose()
    return samples, rate


@contextlib.contextmanager
def outbox(kind: str, tmp: Path) -> Iterator[BillingStore]:
    """A store with ``ROWS`` pending outbox rows, on SQLite or a fresh PostgreSQL schema."""
    with database(kind, tmp) as store:
        for i in range(ROWS):
            store.create_customer(f"C{i}", f"c{i}@x.io")
        yield store


@contextlib.contextmanager
def database(kind: str, tmp: Path) -> Iterator[BillingStore]:
    """A store on a new SQLite file or a fresh PostgreSQL schema (named in its URL, so that
    other processes can open it)."""
    if kind == "sqlite":
        store = BillingStore.open(str(tmp / "outbox.db"))
        cleanup = store.engine.dispose
    else:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(POSTGRES_URL)
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        store = BillingStore.open(f"{POSTGRES_URL}?options=-csearch_path%3D{schema}")

        def cleanup() -> None:
            store.engine.dispose()
            with admin.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()

    try:
        yield store
    finally:
        cleanup()


def dispatch_rate(benchmark: Any, server: EmbeddedNats, store: BillingStore) -> None:
    async def drain() -> float:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_stream(js)
        dispatcher = Dispatcher(store, js, batch=500)
        start = time.perf_counter()
        while await dispatcher.dispatch_once():
            pass
        elapsed = time.perf_counter() - start
        await nc.close()
        assert dispatcher.stats.published == ROWS
        return elapsed

    benchmark.extra_info["rows_per_s"] = round(ROWS / one(benchmark, lambda: asyncio.run(drain())))


@pytest.mark.benchmark(group="dispatcher")
def test_dispatcher__baseline_raw_publish(benchmark: Any, server: EmbeddedNats, tmp_path: Path) -> None:
    with outbox("sqlite", tmp_path) as store:
        payloads = [p for _, p in store.list_events(limit=ROWS)]

    async def publish() -> float:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_stream(js)
        start = time.perf_counter()
        for i, payload in enumerate(payloads):
            await js.publish("billing.events.customer.created", payload, headers={"Nats-Msg-Id": f"raw{i}"})
        elapsed = time.perf_counter() - start
        await nc.close()
        return elapsed

    benchmark.extra_info["rows_per_s"] = round(ROWS / one(benchmark, lambda: asyncio.run(publish())))


@pytest.mark.benchmark(group="dispatcher")
def test_dispatcher__sqlite(benchmark: Any, server: EmbeddedNats, tmp_path: Path) -> None:
    with outbox("sqlite", tmp_path) as store:
        dispatch_rate(benchmark, server, store)


@pytest.mark.benchmark(group="dispatcher")
def test_dispatcher__postgresql(benchmark: Any, server: EmbeddedNats, tmp_path: Path) -> None:
    with outbox("postgresql", tmp_path) as store:
        dispatch_rate(benchmark, server, store)
