"""Live-sync benchmarks (``make bench``), each beside a raw nats-py baseline in the same run.

- propagation latency: publish -> visible in the table, p50/p99 over 10,000 events, beside
  publish -> callback of a plain nats-py JetStream subscription on the same stream;
- apply throughput through NATS, events/s, beside raw nats-py consumption of the same messages;
- cold start: restore a 1M-tenant snapshot and be current with the stream;
- ``/v1/check`` over HTTP: requests/s from a load generator on loopback, beside ``/healthz``.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from billing_gateway import Gateway
from billing_gateway.consumer import EventConsumer
from billing_gateway.natsd import EmbeddedNats, free_port
from billing_gateway.snapshots import SnapshotStore
from billing_gateway.stream import ensure_stream
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from tests.conftest import END, NOW, created, paid, payment_failed, updated

LATENCY_EVENTS = 10_000
THROUGHPUT_EVENTS = 50_000
THROUGHPUT_TENANTS = 5_000


@pytest.fixture
def server() -> Iterator[EmbeddedNats]:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(Path(tmp)) as s:
        yield s


def events(n: int, prefix: str) -> list[bytes]:
    return [created(f"sub_{prefix}{i}", f"cus_{prefix}{i}", event_id=f"evt_{prefix}{i}") for i in range(n)]


def percentiles(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=100)
    return {"p50_us": round(q[49] * 1e6, 1), "p99_us": round(q[98] * 1e6, 1)}


def one(benchmark: Any, fn: Callable[[], Any]) -> Any:
    return benchmark.pedantic(fn, rounds=1, iterations=1)


async def publish_and_wait(server: EmbeddedNats, attach: Callable[..., Any], prefix: str) -> list[float]:
    """Publishes events one at a time; each latency ends when ``attach``'s callback fires."""
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await ensure_stream(js)
    arrived = asyncio.Event()
    detach = await attach(arrived.set)
    samples = []
    for raw in events(LATENCY_EVENTS, prefix):
        arrived.clear()
        start = time.perf_counter()
        await nc.publish(f"billing.events.subscription.created.{prefix}", raw)
        await asyncio.wait_for(arrived.wait(), 30)  # a lost event fails the run, not hangs it
        samples.append(time.perf_counter() - start)
    await detach()
    await nc.close()
    return samples


@pytest.mark.benchmark(group="propagation")
def test_propagation__baseline_raw_nats_py(benchmark: Any, server: EmbeddedNats) -> None:
    async def attach(done: Callable[[], None]) -> Any:
        nc = await nats.connect(server.url)

        async def cb(msg: Any) -> None:
            done()

        sub = await nc.jetstream().subscribe(
            "billing.events.>", cb=cb, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )

        async def detach() -> None:
            await sub.unsubscribe()
            await nc.close()

        return detach

    samples = one(benchmark, lambda: asyncio.run(publish_and_wait(server, attach, "raw")))
    benchmark.extra_info.update(percentiles(samples))


@pytest.mark.benchmark(group="propagation")
def test_propagation__gateway(benchmark: Any, server: EmbeddedNats) -> None:
    gw = Gateway()

    async def attach(done: Callable[[], None]) -> Any:
        consumer = EventConsumer(gw, server.url, on_applied=lambda seq, outcome: done())
        await consumer.start()
        return consumer.stop

    samples = one(benchmark, lambda: asyncio.run(publish_and_wait(server, attach, "gw")))
    benchmark.extra_info.update(percentiles(samples))
    assert len(gw) == LATENCY_EVENTS


def mixed(n: int, tenants: int) -> list[bytes]:
    """A billing stream's shape: each tenant created once, then updates, renewals, failures."""
    out = events(min(n, tenants), "t")
    for i in range(n - len(out)):
        t, ts = i % tenants, NOW + timedelta(milliseconds=i)
        kind = i % 10
        if kind < 7:
            out.append(updated(f"sub_t{t}", ts=ts, new_total_budget=str(100 + i % 50), event_id=f"u{i}"))
        elif kind < 9:
            out.append(
                paid(f"sub_t{t}", f"cus_t{t}", start=END + timedelta(seconds=i), ts=ts, event_id=f"p{i}")
            )
        else:
            out.append(payment_failed(f"sub_t{t}", f"cus_t{t}", ts=ts, event_id=f"f{i}"))
    return out


async def fill(server: EmbeddedNats, n: int, tenants: int | None = None) -> None:
    """``n`` events: a mixed stream over ``tenants`` tenants, or only creations."""
    nc = await nats.connect(server.url)
    await ensure_stream(nc.jetstream())
    for raw in mixed(n, tenants) if tenants else events(n, "t"):
        await nc.publish("billing.events.x", raw)
    await nc.flush()
    await nc.close()
    await asyncio.sleep(0.5)


def raw_rate(benchmark: Any, server: EmbeddedNats, tenants: int | None) -> None:
    """Raw nats-py consumption (an ordered consumer, a callback that counts)."""
    asyncio.run(fill(server, THROUGHPUT_EVENTS, tenants))

    async def consume_all() -> float:
        nc = await nats.connect(server.url)
        done = asyncio.Event()
        count = 0

        async def cb(msg: Any) -> None:
            nonlocal count
            count += 1
            if count == THROUGHPUT_EVENTS:
                done.set()

        start = time.perf_counter()
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL)
        await nc.jetstream().subscribe("billing.events.>", cb=cb, ordered_consumer=True, config=config)
        await done.wait()
        elapsed = time.perf_counter() - start
        await nc.close()
        return elapsed

    elapsed = one(benchmark, lambda: asyncio.run(consume_all()))
    benchmark.extra_info["events_per_s"] = round(THROUGHPUT_EVENTS / elapsed)


def gateway_rate(benchmark: Any, server: EmbeddedNats, tenants: int | None) -> None:
    """The same messages applied to a Gateway by an EventConsumer."""
    asyncio.run(fill(server, THROUGHPUT_EVENTS, tenants))
    gw = Gateway()

    async def consume_all() -> float:
        done = asyncio.Event()
        consumer = EventConsumer(
            gw, server.url, on_applied=lambda seq, _: seq == THROUGHPUT_EVENTS and done.set()
        )
        start = time.perf_counter()
        await consumer.start()
        await done.wait()
        elapsed = time.perf_counter() - start
        await consumer.stop()
        return elapsed

    elapsed = one(benchmark, lambda: asyncio.run(consume_all()))
    benchmark.extra_info["events_per_s"] = round(THROUGHPUT_EVENTS / elapsed)
    assert len(gw) == (tenants or THROUGHPUT_EVENTS)


@pytest.mark.benchmark(group="throughput")
def test_throughput__baseline_raw_nats_py(benchmark: Any, server: EmbeddedNats) -> None:
    raw_rate(benchmark, server, THROUGHPUT_TENANTS)


@pytest.mark.benchmark(group="throughput")
def test_throughput__gateway(benchmark: Any, server: EmbeddedNats) -> None:
    gateway_rate(benchmark, server, THROUGHPUT_TENANTS)


@pytest.mark.benchmark(group="throughput_creations_only")
def test_throughput_creations_only__baseline_raw_nats_py(benchmark: Any, server: EmbeddedNats) -> None:
    raw_rate(benchmark, server, None)


@pytest.mark.benchmark(group="throughput_creations_only")
def test_throughput_creations_only__gateway(benchmark: Any, server: EmbeddedNats) -> None:
    gateway_rate(benchmark, server, None)


@pytest.mark.benchmark(group="cold_start_1M")
def test_cold_start_1M__gateway(benchmark: Any, server: EmbeddedNats, tmp_path: Path) -> None:
    from .test_bench_gateway import million_events

    gw = Gateway()
    for raw in million_events():
        gw.apply(raw)
    store = SnapshotStore(tmp_path / "million.snap")
    store.save(gw, 0)
    del gw

    async def cold_start() -> None:
        consumer = EventConsumer.from_snapshot(store, server.url)
        await consumer.start()
        await consumer.wait_until_current()
        assert len(consumer.gateway) == 1_000_000
        await consumer.stop()

    one(benchmark, lambda: asyncio.run(cold_start()))
    benchmark.extra_info["snapshot_bytes"] = store.path.stat().st_size


@pytest.fixture
def daemon(server: EmbeddedNats, tmp_path: Path) -> Iterator[int]:
    asyncio.run(fill(server, 1))
    port = free_port()
    command = [sys.executable, "-m", "billing_gateway.cli", "--log-level", "WARNING",
               "--nats-url", server.url, "consume", "--http", f"127.0.0.1:{port}"]  # fmt: skip
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                break
        except OSError:
            time.sleep(0.05)
    yield port
    process.terminate()
    process.wait(30)


def load(port: int, path: str, body: bytes | None, seconds: int = 5) -> float:
    """Requests/s from wrk (2 threads, 32 connections), or from a Python client without it."""
    url = f"http://127.0.0.1:{port}{path}"
    if shutil.which("wrk"):
        script = Path(tempfile.mkstemp(suffix=".lua")[1])
        if body is not None:
            script.write_text(f'wrk.method = "POST"\nwrk.body = {body.decode()!r}\n'
                              'wrk.headers["Content-Type"] = "application/json"\n')  # fmt: skip
        out = subprocess.run(
            ["wrk", "-t2", "-c32", f"-d{seconds}s", "-s", str(script), url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return float(next(line for line in out.splitlines() if "Requests/sec" in line).split()[1])
    return asyncio.run(_python_load(url, body, seconds))


async def _python_load(url: str, body: bytes | None, seconds: float) -> float:
    import aiohttp

    count = 0
    deadline = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal count
        while time.monotonic() < deadline:
            method = session.post if body is not None else session.get
            async with method(url, data=body) as resp:
                await resp.read()
            count += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(32)))
    return count / seconds


@pytest.mark.benchmark(group="http_check")
def test_http_check__baseline_healthz(benchmark: Any, daemon: int) -> None:
    benchmark.extra_info["requests_per_s"] = round(one(benchmark, lambda: load(daemon, "/healthz", None)))


@pytest.mark.benchmark(group="http_check")
def test_http_check__check(benchmark: Any, daemon: int) -> None:
    body = b'{"tenant_id": "cus_t0", "amount": 1}'
    benchmark.extra_info["requests_per_s"] = round(one(benchmark, lambda: load(daemon, "/v1/check", body)))
