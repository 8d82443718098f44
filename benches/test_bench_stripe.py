"""Stripe sync benchmarks (``make bench``), each beside a baseline measured in the same run.

- webhooks verified and stored per second through ``POST /api/v1/stripe/webhook`` (SQLite
  and PostgreSQL), beside the same endpoint refusing a bad signature (verified, nothing
  stored): the cost of storing;
- Stripe webhook -> visible in a gateway's table, p50/p99, through the worker, the outbox,
  the dispatcher and the stream, beside the billing API -> gateway figure
  (``PATCH /subscriptions``, as in ``test_bench_billing``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from billing_gateway.billing.api import create_app
from billing_gateway.billing.client import AsyncBillingClient
from billing_gateway.billing.store import BillingStore
from billing_gateway.billing.stripe.runtime import StripeRuntime
from billing_gateway.billing.stripe.settings import StripeSettings
from billing_gateway.natsd import EmbeddedNats, free_port

from tests.stripe_payloads import SECRET, T0, body, customer, event, sign, subscription

from .test_bench_billing import Watch, billing_serve, database, measure_api_to_gateway, one, server
from .test_bench_sync import percentiles

__all__ = ["server"]  # a fixture used here

WEBHOOKS = 1_000
ROUNDS = 500
PRICES = {"plan_pro": "price_pro", "plan_team": "price_team"}


@pytest.fixture
def runtime() -> StripeRuntime:
    return StripeRuntime(StripeSettings(webhook_secrets=(SECRET,), price_map=PRICES))


@contextlib.contextmanager
def serving(store: BillingStore, runtime: StripeRuntime) -> Iterator[str]:
    port = free_port()
    api = uvicorn.Server(
        uvicorn.Config(create_app(store, runtime), port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=api.run, daemon=True)
    thread.start()
    while not api.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        api.should_exit = True
        thread.join(10)


def signed(evt: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    payload = body(evt)
    return payload, {"Stripe-Signature": sign(payload), "Content-Type": "application/json"}


def store_rate(benchmark: Any, store: BillingStore, runtime: StripeRuntime, *, bad: bool = False) -> None:
    requests = [signed(event("customer.created", customer(f"cus_B{i}"))) for i in range(WEBHOOKS)]
    if bad:
        requests = [(p, {**h, "Stripe-Signature": h["Stripe-Signature"][:-4] + "0000"}) for p, h in requests]
    expected = 400 if bad else 200
    with serving(store, runtime) as url, httpx.Client(base_url=url, timeout=30) as http:

        def send() -> float:
            start = time.perf_counter()
            for payload, headers in requests:
                answer = http.post("/api/v1/stripe/webhook", content=payload, headers=headers)
                assert answer.status_code == expected
            return time.perf_counter() - start

        benchmark.extra_info["webhooks_per_s"] = round(WEBHOOKS / one(benchmark, send))


@pytest.mark.benchmark(group="stripe_webhooks")
def test_stripe_webhooks__baseline_refused_signature(
    benchmark: Any, tmp_path: Path, runtime: StripeRuntime
) -> None:
    with database("sqlite", tmp_path) as store:
        store_rate(benchmark, store, runtime, bad=True)


@pytest.mark.benchmark(group="stripe_webhooks")
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_stripe_webhooks__verified_and_stored(
    benchmark: Any, tmp_path: Path, runtime: StripeRuntime, db: str
) -> None:
    with database(db, tmp_path) as store:
        store_rate(benchmark, store, runtime)


@pytest.mark.benchmark(group="stripe_to_gateway")
def test_stripe_to_gateway__baseline_billing_api(
    benchmark: Any, server: EmbeddedNats, tmp_path: Path
) -> None:
    measure_api_to_gateway(benchmark, server, tmp_path, "sqlite")


@pytest.mark.benchmark(group="stripe_to_gateway")
def test_stripe_to_gateway__webhook(benchmark: Any, server: EmbeddedNats, tmp_path: Path) -> None:
    """A signed ``customer.subscription.updated`` (alternating plans) through a ``billing
    serve`` process (endpoint, Stripe worker woken by it, outbox, dispatcher) until this
    process's gateway table shows it."""
    env = {
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_PRODUCT_PRICE_MAP": ",".join(f"{k}={v}" for k, v in PRICES.items()),
    }
    rounds = [
        signed(event("customer.subscription.updated",
                     subscription("sub_1Bench", "cus_Bench", tenant_id="tenant_bench",
                                  price_id="price_team" if i % 2 else "price_pro"), created=T0 + i))
        for i in range(ROUNDS + 1)
    ]  # fmt: skip
    with billing_serve("sqlite", tmp_path, server, **env) as (url, key):
        samples = one(benchmark, lambda: asyncio.run(webhooks_to_gateway(server, url, key, rounds)))
    benchmark.extra_info.update(percentiles(samples))


async def webhooks_to_gateway(
    server: EmbeddedNats, url: str, key: str, rounds: list[tuple[bytes, dict[str, str]]]
) -> list[float]:
    client = AsyncBillingClient(url, key)
    for plan, budget in (("plan_pro", "1"), ("plan_team", "2")):
        await client.create_plan(id=plan, name=plan, currency="USD", included_budget=budget, price="0")
    watch = Watch(server.url)
    await watch.consumer.start()
    samples = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for i, (payload, headers) in enumerate(rounds):
            plan = "plan_team" if i % 2 else "plan_pro"

            def shown(gw: Any, plan: str = plan) -> bool:
                return (b := gw.budget("tenant_bench")) is not None and b.plan_id == plan

            async def send(payload: bytes = payload, headers: dict[str, str] = headers) -> None:
                answer = await http.post("/api/v1/stripe/webhook", content=payload, headers=headers)
                assert answer.status_code == 200, answer.text

            start = time.perf_counter()
            await watch.until(shown, send)
            if i:  # the first creates the subscription (and waits on the consumer's start)
                samples.append(time.perf_counter() - start)
    await watch.consumer.stop()
    await client.aclose()
    return samples
