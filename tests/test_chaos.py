"""Issue 7, "done means": the whole system under faults, as real processes.

``billing serve`` (API, dispatcher, usage ingestion) on SQLite, two ``consume`` daemons
and a nats-server, all on loopback. While subscription changes go through the billing
API and spends go to both daemons, the broker is restarted twice and one daemon is
killed with ``kill -9`` and started again. At the end billing, its outbox, the stream
and both gateways agree, and no tenant spent more than its budget at either gateway
beyond the documented ``kill -9`` window (the spends of the last snapshot interval).
The two gateways share their budgets through Redis leases (strict mode), so across both
together no tenant was granted more than its budget either, ``kill -9`` included.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from billing_gateway.billing.client import BillingClient
from billing_gateway.billing.store import BillingStore
from billing_gateway.natsd import EmbeddedNats, free_port, listening

from .leases_support import drop_prefix, unique_prefix
from .processes import CLI, Daemon, stream_in_order
from .test_durability import wait_until

UNIT = 1_000_000
SNAPSHOT_EVERY = 0.3
TENANTS = 6


def test_the_whole_system_through_broker_restarts_and_a_kill_9(tmp_path: Path, redis_url: str) -> None:
    rng = random.Random(7)
    nats_server = EmbeddedNats(tmp_path / "nats").start()
    db = str(tmp_path / "billing.db")
    store = BillingStore.open(db)
    _, key = store.create_api_key(["billing:*"])
    port = free_port()
    billing_log = open(tmp_path / "billing.log", "wb")  # noqa: SIM115 (closed below)
    billing = subprocess.Popen(
        [*CLI, "--nats-url", nats_server.url, "billing", "--db", db, "serve",
         "--http", f"127.0.0.1:{port}", "--cycle-every", "3600"],
        stdout=billing_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    prefix = unique_prefix()
    gateways = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        options = ["--snapshot-every", str(SNAPSHOT_EVERY), "--usage-every", "0.3"]
        options += ["--billing-url", url, "--billing-key", key]
        options += ["--redis-url", redis_url, "--lease-ttl", "1", "--lease-key-prefix", prefix]
        options += ["--replica-id", name]
        gateways.append(Daemon(tmp_path / name, nats_server.url, *options))
    acknowledged: dict[tuple[int, str], list[tuple[float, int]]] = {}
    kill_times: list[float] = []
    stop = threading.Event()
    try:
        wait_until(lambda: listening(port), timeout=30)
        for g in gateways:
            g.start()
        with BillingClient(url, key, retries=8) as c:
            c.create_plan(id="small", name="Small", currency="USD", included_budget="2", price="1")
            c.create_plan(id="large", name="Large", currency="USD", included_budget="4", price="2")
            subs = {}
            for i in range(TENANTS):
                customer = c.create_customer(f"T{i}", f"t{i}@example.com", idempotency_key=f"cus-{i}")
                subs[customer.id] = c.create_subscription(customer.id, "small", idempotency_key=f"sub-{i}").id
        tenants = sorted(subs)
        for g in gateways:
            wait_until(lambda g=g: all(g.request("GET", f"/v1/budgets/{t}")[0] == 200 for t in tenants), 30)

        def spender(index: int) -> None:
            g = gateways[index]
            while not stop.is_set():
                tenant = rng.choice(tenants)
                try:
                    status, _ = g.post("/v1/spend", {"tenant_id": tenant, "amount": 37_000})
                except OSError:
                    time.sleep(0.05)  # the daemon is down (killed): try again
                    continue
                if status == 200:
                    acknowledged.setdefault((index, tenant), []).append((time.monotonic(), 37_000))

        threads = [threading.Thread(target=spender, args=(i,), daemon=True) for i in (0, 1)]
        for t in threads:
            t.start()
        with BillingClient(url, key, retries=20) as c:
            for step in range(12):
                tenant = tenants[step % TENANTS]
                if step == 3 or step == 8:
                    nats_server.stop()
                    time.sleep(1.0)
                    nats_server = EmbeddedNats(tmp_path / "nats", nats_server.port).start()
                if step == 5:
                    gateways[1].kill9()
                    kill_times.append(time.monotonic())
                    time.sleep(0.5)
                    gateways[1].start(wait=False)
                if step % 4 == 2:
                    c.update_subscription(subs[tenant], plan_id="large")
                elif step == 10:
                    c.cancel_subscription(subs[tenant])
                else:
                    c.update_subscription(subs[tenant], total_budget=Decimal(3 + step % 3))
                time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(10)
        assert all(any((i, t) in acknowledged for t in tenants) for i in (0, 1)), "both gateways spent"

        # Everything settles: the outbox is published, both gateways are current.
        wait_until(lambda: _pending(store) == 0, timeout=60)
        last = len(stream_in_order(nats_server.url))
        for g in gateways:
            wait_until(lambda g=g: g.request("GET", "/readyz")[1].get("cursor", 0) >= last, timeout=60)

        outbox = [row.event_id for row in _outbox(store)]
        streamed = [
            m
            for m in (_event_id(raw) for raw in stream_in_order(nats_server.url))
            if not m.startswith("usage_")
        ]
        assert streamed == outbox, "the stream holds every outbox event, once, in order"

        with BillingClient(url, key) as c:
            for tenant in tenants:
                sub = c.get_subscription(subs[tenant])
                total = int(sub.total_budget * UNIT)
                for index, g in enumerate(gateways):
                    status, budget = g.request("GET", f"/v1/budgets/{tenant}")
                    assert status == 200
                    assert (budget["status"], budget["total"], budget["plan_id"]) == (
                        sub.status, total, sub.plan_id,
                    ), (index, tenant)  # fmt: skip
                    assert budget["spent"] <= budget["total"]
                    spends = acknowledged.get((index, tenant), [])
                    window = sum(
                        a
                        for t, a in spends
                        for k in kill_times
                        if index == 1 and k - SNAPSHOT_EVERY - 1.0 <= t <= k
                    )
                    allowed = sum(a for _, a in spends)
                    assert allowed <= max(total, _highest_total(store, subs[tenant])) + window, (
                        index,
                        tenant,
                    )
                shared = sum(a for index in (0, 1) for _, a in acknowledged.get((index, tenant), []))
                assert shared <= max(total, _highest_total(store, subs[tenant])), f"{tenant}: both together"

        # Usage flows back exactly: billing recorded what the gateways' tables say was spent
        # (a spend lost by the kill -9 was never reported either).
        final_spent = {
            t: sum(g.request("GET", f"/v1/budgets/{t}")[1]["spent"] for g in gateways) for t in tenants
        }
        for g in gateways:
            assert g.terminate() == 0  # reports what is left, then a final snapshot
        wait_until(lambda: _usage(store) == {subs[t]: n for t, n in final_spent.items() if n}, timeout=30)
        billing.send_signal(signal.SIGTERM)
        assert billing.wait(30) == 0
        for name, text in (("billing", (tmp_path / "billing.log").read_text()), *(
            (f"gateway {i}", g.log.read_text()) for i, g in enumerate(gateways)
        )):  # fmt: skip
            assert "Traceback" not in text, f"{name}:\n{text[-3000:]}"
    finally:
        stop.set()
        for g in gateways:
            if g.process is not None and g.process.poll() is None:
                g.kill9()
        if billing.poll() is None:
            billing.kill()
        billing_log.close()
        nats_server.stop()
        store.engine.dispose()
        drop_prefix(redis_url, prefix)


def _pending(store: BillingStore) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM billing_events WHERE status <> 'published'")
            ).scalar_one()
        )


def _outbox(store: BillingStore) -> list[sa.Row[tuple[str]]]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT event_id FROM billing_events ORDER BY seq")))


def _usage(store: BillingStore) -> dict[str, int]:
    query = "SELECT subscription_id, sum(amount) FROM usage_records GROUP BY subscription_id"
    with store.engine.connect() as conn:
        return {str(sub): int(total) for sub, total in conn.execute(sa.text(query))}


def _event_id(raw: bytes) -> str:
    return str(json.loads(raw)["event_id"])


def _highest_total(store: BillingStore, sub_id: str) -> int:
    """The largest budget the subscription had during the run (a spend admitted under a
    larger budget stays admitted when the budget shrinks)."""
    highest = 0
    with store.engine.connect() as conn:
        for (payload,) in conn.execute(sa.text("SELECT payload FROM billing_events ORDER BY seq")):
            doc = json.loads(payload)
            data = doc.get("data", {})
            if data.get("subscription_id") != sub_id:
                continue
            for key in ("total_budget", "new_total_budget"):
                if data.get(key) is not None:
                    highest = max(highest, int(Decimal(str(data[key])) * UNIT))
    return highest
