"""Stripe sync end to end, as real processes: a signed webhook into ``billing serve`` ->
the Stripe worker -> the outbox -> the dispatcher -> NATS -> a ``consume`` gateway daemon,
its latency measured (and printed, not asserted); and ``kill -9`` of the service while its
worker is applying a batch loses no event and applies none twice."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
from billing_gateway import to_micros
from billing_gateway.billing.store import BillingStore
from billing_gateway.billing.stripe import inbox
from billing_gateway.billing.stripe.objects import decode_event

from .billing_fixtures import BillingServer, nats_url, pg_url
from .processes import Daemon
from .stripe_payloads import SECRET, T0, body, customer, event, sign, subscription

__all__ = ["nats_url", "pg_url"]  # fixtures used here

ENV = {"STRIPE_WEBHOOK_SECRET": SECRET, "STRIPE_PRODUCT_PRICE_MAP": "plan_pro=price_pro,plan_team=price_team"}


def plans(db: str) -> BillingStore:
    store = BillingStore.open(db)
    store.create_plan(plan_id="plan_pro", name="Pro", currency="USD", included_budget=to_micros(100), price=0)
    store.create_plan(
        plan_id="plan_team", name="Team", currency="USD", included_budget=to_micros(500), price=0
    )
    return store


def wait(check: Callable[[], Any], what: str, timeout: float = 60.0, since: float | None = None) -> float:
    """Seconds from ``since`` (default now) until ``check()`` is true (polled); fails after
    ``timeout``."""
    start = time.monotonic() if since is None else since
    while not check():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout}s"
        time.sleep(0.005)
    return time.monotonic() - start


def test_a_signed_webhook_reaches_a_gateway_daemon(tmp_path: Path, pg_url: str, nats_url: str) -> None:
    store = plans(pg_url)
    server = BillingServer(pg_url, nats_url, tmp_path / "billing.log", **ENV).launch().ready()
    daemon = Daemon(tmp_path, nats_url).start()
    try:
        http = httpx.Client(base_url=server.url, timeout=30)

        def deliver(evt: dict[str, Any]) -> float:
            """Posts the event signed; when it was posted (``time.monotonic()``)."""
            posted = time.monotonic()
            payload = body(evt)
            answer = http.post(
                "/api/v1/stripe/webhook", content=payload, headers={"Stripe-Signature": sign(payload)}
            )
            assert answer.status_code == 200, answer.text
            return posted

        def budget() -> dict[str, Any] | None:
            status, found = daemon.request("GET", "/v1/budgets/tenant_e2e")
            return found if status == 200 else None

        sub = "sub_1E2E"
        deliver(event("customer.created", customer("cus_E2E", tenant_id="tenant_e2e"), created=T0))

        def timed(kind: str, check: Callable[[dict[str, Any]], bool], created: int, **fields: Any) -> float:
            posted = deliver(event(f"customer.subscription.{kind}", subscription(sub, "cus_E2E", **fields),
                                   created=created))  # fmt: skip
            return wait(lambda: (b := budget()) is not None and check(b), kind, since=posted)

        first = timed("created", lambda b: b["status"] == "trialing", T0 + 1, status="trialing")
        upgrade = timed("updated", lambda b: b["plan_id"] == "plan_team", T0 + 2, price_id="price_team")
        assert (b := budget()) is not None and b["total"] == to_micros(500) and b["status"] == "active"
        cancel = timed(
            "deleted", lambda b: b["status"] == "canceled", T0 + 3, status="canceled", price_id="price_team"
        )
        status, decision = daemon.post("/v1/check", {"tenant_id": "tenant_e2e", "amount": 1})
        assert status == 403 and decision["allowed"] is False
        print(f"\nStripe webhook -> gateway daemon: created {first * 1e3:.0f} ms, "
              f"upgraded {upgrade * 1e3:.0f} ms, canceled {cancel * 1e3:.0f} ms")  # fmt: skip
        metrics = http.get("/metrics").text
        processed = (
            'billing_stripe_webhook_events_total{type="customer.subscription.created",outcome="processed"}'
        )
        assert f"{processed} 1" in metrics
        assert "billing_stripe_processing_seconds_count 4" in metrics
        http.close()
    finally:
        daemon.kill9()
        server.stop()
        store.engine.dispose()


SUBS = 60


def test_kill_9_of_the_worker_mid_batch_loses_nothing_and_applies_nothing_twice(
    tmp_path: Path, nats_url: str
) -> None:
    db = str(tmp_path / "billing.db")
    store = plans(db)
    for i in range(SUBS):  # a backlog, as after an outage: the worker applies it in a batch
        sub, cus = f"sub_1K{i}", f"cus_K{i}"
        for evt in (
            event("customer.created", customer(cus, tenant_id=f"tenant_k{i}"), created=T0 + i),
            event("customer.subscription.created", subscription(sub, cus), created=T0 + i),
            event(
                "customer.subscription.updated",
                subscription(sub, cus, price_id="price_team"),
                created=T0 + i + 1,
            ),
        ):
            payload = body(evt)
            inbox.receive(store, decode_event(payload), payload)
    rng = random.Random(11)
    log = tmp_path / "billing.log"
    mid_batch = 0
    for _ in range(4):
        pending = inbox.count_rows(store, "pending")
        if pending == 0:
            break
        server = BillingServer(db, nats_url, log, **ENV).launch()
        wait(lambda: inbox.count_rows(store, "pending") < pending, "the worker's first event")  # noqa: B023
        time.sleep(rng.uniform(0.0, 0.05))
        server.kill()
        mid_batch += inbox.count_rows(store, "pending") > 0
    server = BillingServer(db, nats_url, log, **ENV).launch()
    try:
        wait(lambda: inbox.count_rows(store, "pending") == 0, "the backlog", timeout=120)
    finally:
        server.stop()
    assert mid_batch >= 1, "killed while events were being applied"
    rows = inbox.list_rows(store, limit=10_000)
    assert len(rows) == 3 * SUBS and {r.status for r in rows} == {"processed"}, "none lost"
    assert {r.attempts for r in rows} == {1}, "each applied in one committed attempt"
    outbox = [msgspec.json.decode(p) for _, p in store.list_events(limit=100_000)]
    audits = Counter(
        e["data"]["stripe_event_id"] for e in outbox if e["event_type"] == "stripe.event_processed"
    )
    assert set(audits.values()) == {1} and len(audits) == 3 * SUBS, "each audited once"
    changes = Counter(e["event_type"] for e in outbox if e["event_type"] != "stripe.event_processed")
    assert changes == {"customer.created": SUBS, "subscription.created": SUBS, "subscription.updated": SUBS}
    for i in range(SUBS):
        found = store.get_subscription(f"sub_1K{i}")
        assert found is not None and (found.customer_id, found.plan_id) == (f"tenant_k{i}", "plan_team")
    store.engine.dispose()
