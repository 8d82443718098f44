"""The ``billing-gateway`` daemon and CLI, run as real processes against a real nats-server."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from billing_gateway import Gateway, InvalidEvent, ParkingFull
from billing_gateway.natsd import EmbeddedNats

from .conftest import END, NOW, START, created, paid, payment_failed, updated
from .processes import CLI, Daemon, publish_all, stream_in_order

__all__ = ["CLI", "Daemon", "publish_all", "stream_in_order"]  # tests/test_billing_cli.py imports them here


def reference(messages: list[bytes]) -> Gateway:
    """A gateway that applied the stream once, in order (what the daemon must converge to)."""
    gw = Gateway()
    for raw in messages:
        with contextlib.suppress(InvalidEvent, ParkingFull):
            gw.apply(raw)
    return gw


def budget_fields(doc: dict[str, Any]) -> tuple[Any, ...]:
    keys = ("subscription_id", "plan_id", "plan_name", "total", "spent", "reserved", "status")
    return (*(doc[k] for k in keys), doc["period_start"], doc["period_end"])


def same_state(d: Daemon, ref: Gateway) -> None:
    for b in ref.budgets():
        status, doc = d.request("GET", f"/v1/budgets/{b.tenant_id}")
        assert status == 200, doc
        expected = (b.subscription_id, b.plan_id, b.plan_name, b.total, b.spent, b.reserved, b.status)
        iso = (
            b.period_start.isoformat().replace("+00:00", "Z"),
            b.period_end.isoformat().replace("+00:00", "Z"),
        )
        assert budget_fields(doc) == expected + iso, b.tenant_id


# ---- HTTP ---------------------------------------------------------------------------------


def test_http_endpoints(daemon: Daemon, server: EmbeddedNats) -> None:
    assert daemon.request("GET", "/healthz") == (200, {"status": "ok"})
    publish_all(server.url, [created(total="10", start=START, end=NOW + timedelta(days=3650))])
    ready = daemon.wait_for("/readyz")
    assert ready["ready"] is True and ready["cursor"] == 1 and ready["gap"] is False

    status, doc = daemon.request("GET", "/v1/budgets/cus_1")
    assert status == 200
    assert doc["total"] == 10_000_000 and doc["decimal"]["total"] == "10"
    assert doc["period_start"] == "2026-06-01T00:00:00Z" and doc["currency"] == "USD"
    status, doc = daemon.request("GET", "/v1/budgets/nobody")
    assert (status, doc["field"]) == (404, "tenant_id")

    ok = {"tenant_id": "cus_1", "amount": 4_000_000}
    status, doc = daemon.post("/v1/check", ok)
    assert (
        status == 200 and doc["allowed"] is True and doc["reason"] == "ok" and doc["remaining"] == 10_000_000
    )
    status, doc = daemon.post("/v1/spend", ok)
    assert status == 200 and doc["remaining"] == 6_000_000
    status, doc = daemon.post("/v1/spend", {"tenant_id": "cus_1", "amount": 7_000_000})
    assert status == 403 and doc["allowed"] is False and doc["reason"] == "insufficient_budget"
    status, doc = daemon.post("/v1/check", {"tenant_id": "nobody", "amount": 1})
    assert status == 403 and doc["reason"] == "unknown_tenant"
    status, doc = daemon.request("GET", "/v1/check?tenant_id=cus_1&amount=1000")
    assert status == 200 and doc["allowed"] is True
    assert daemon.request("GET", "/v1/budgets/cus_1")[1]["spent"] == 4_000_000

    bad = [
        (b"{not json", None),
        (b'{"amount": 1}', "tenant_id"),
        (b'{"tenant_id": "cus_1"}', "amount"),
        (b'{"tenant_id": "cus_1", "amount": "5"}', "amount"),
        (b'{"tenant_id": "cus_1", "amount": 1.5}', "amount"),
        (b'{"tenant_id": "cus_1", "amount": -1}', "amount"),
        (b'{"tenant_id": 7, "amount": 1}', "tenant_id"),
        (b'{"tenant_id": "cus_1", "amount": 99999999999999999999}', "amount"),
    ]
    for body, field in bad:
        for path in ("/v1/check", "/v1/spend"):
            status, doc = daemon.request("POST", path, body)
            assert status == 400, (body, doc)
            assert doc["error"] and doc["field"] == field, (body, doc)
    status, doc = daemon.request("GET", "/v1/check?tenant_id=cus_1&amount=x")
    assert (status, doc["field"]) == (400, "amount")
    assert daemon.request("GET", "/v1/budgets/cus_1")[1]["spent"] == 4_000_000, "bad requests spend nothing"

    status, text = daemon.request("GET", "/metrics")
    assert status == 200
    assert 'billing_gateway_events_total{outcome="applied"} 1.0' in text
    assert "billing_gateway_consumer_lag 0.0" in text
    assert "billing_gateway_tenants 1.0" in text


def test_readyz_is_503_until_caught_up(tmp_path: Path) -> None:
    d = Daemon(tmp_path, "nats://127.0.0.1:9").start()  # nothing listens there
    try:
        status, doc = d.request("GET", "/readyz")
        assert status == 503 and doc["ready"] is False
        assert d.request("GET", "/healthz")[0] == 200
        assert d.terminate() == 0
    finally:
        if d.process is not None and d.process.poll() is None:
            d.kill9()


def test_sigterm_writes_a_final_snapshot_and_exits_0(daemon: Daemon, server: EmbeddedNats) -> None:
    publish_all(server.url, [created(f"sub_{i}", f"cus_{i}") for i in range(50)])
    daemon.wait_for("/readyz")
    while daemon.request("GET", "/readyz")[1]["cursor"] < 50:
        time.sleep(0.05)
    assert daemon.terminate() == 0
    restored = Gateway.restore(daemon.snapshot.read_bytes())
    assert (restored.cursor, len(restored)) == (50, 50)
    assert "stopped at cursor 50" in daemon.log.read_text()


# ---- crash safety ---------------------------------------------------------------------------


def crash_test_events(n: int, tenants: int) -> list[bytes]:
    rng = random.Random(20261121)
    evs = [created(f"sub_{t}", f"cus_{t}", total=str(rng.randint(1, 500)), ts=START) for t in range(tenants)]
    for i in range(n - tenants):
        t = rng.randrange(tenants)
        ts = NOW + timedelta(seconds=rng.randrange(86_400))
        kind = rng.random()
        if kind < 0.55:
            evs.append(updated(f"sub_{t}", ts=ts, new_total_budget=str(rng.randint(1, 900)),
                               new_plan_name=rng.choice(["Pro", "Team", "Scale"])))  # fmt: skip
        elif kind < 0.7:
            evs.append(updated(f"sub_{t}", ts=ts, status=rng.choice(["active", "past_due", "canceled"])))
        elif kind < 0.8:
            evs.append(paid(f"sub_{t}", f"cus_{t}", start=END + timedelta(days=rng.randrange(90)), ts=ts))
        elif kind < 0.85:
            evs.append(payment_failed(f"sub_{t}", f"cus_{t}", ts=ts))
        elif kind < 0.9:
            # A newer subscription takes over the tenant's row.
            evs.append(created(f"sub_{t}_{i}", f"cus_{t}", ts=ts, start=START, total="77"))
        elif kind < 0.99:
            evs.append(evs[rng.randrange(len(evs))])  # republished: broker window or consumer dedupe
        else:
            evs.append(b'{"event_id": "poison", "event_type": "subscription.updated"}')
    return evs


def test_kill_9_at_random_moments_converges_to_applying_each_event_once(
    tmp_path: Path, server: EmbeddedNats
) -> None:
    events = crash_test_events(10_000, tenants=300)
    publisher = threading.Thread(target=publish_all, args=(server.url, events, 250, 0.3))
    publisher.start()
    d = Daemon(tmp_path, server.url)
    rng = random.Random(7)
    kills = 0
    while kills < 20 or publisher.is_alive():
        d.start(wait=rng.random() < 0.85)  # sometimes killed while still starting up
        time.sleep(rng.uniform(0.05, 1.0))
        d.kill9()
        kills += 1
    publisher.join()
    d.start()
    messages = stream_in_order(server.url)
    assert len(messages) >= 9_000  # republished duplicates inside the broker window were dropped
    deadline = time.monotonic() + 60
    while d.request("GET", "/readyz")[1]["cursor"] < len(messages) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d.wait_for("/readyz")["cursor"] == len(messages)
    same_state(d, reference(messages))
    assert kills >= 20
    restores = {
        int(line.rsplit(" ", 1)[1])
        for line in d.log.read_text().splitlines()
        if "at cursor" in line and "restored" in line
    }
    # Each restart on a busy machine takes longer, so fewer of them fall while the
    # publisher runs; several distinct cursors still show restores mid-stream.
    assert len(restores) >= 5, f"restarts resumed from snapshots mid-stream: {sorted(restores)}"
    assert d.terminate() == 0


# ---- the publish command and the embedded server ----------------------------------------------


def test_publish_command_counts(tmp_path: Path, server: EmbeddedNats) -> None:
    first = created(event_id="evt_a").decode()
    lines = [first, updated(event_id="evt_b", new_total_budget="5").decode(), first, "{broken", ""]
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        [*CLI, "--nats-url", server.url, "publish", str(source)], capture_output=True, text=True
    )
    assert done.stdout.strip() == "published 2, duplicates 1, rejected 1"
    assert "line 4: rejected" in done.stderr
    assert done.returncode == 1
    again = subprocess.run(
        [*CLI, "--nats-url", server.url, "publish", "-"], input=first + "\n", capture_output=True, text=True
    )
    assert (again.returncode, again.stdout.strip()) == (0, "published 0, duplicates 1, rejected 0")


def test_embedded_nats_by_default(tmp_path: Path) -> None:
    d = Daemon(tmp_path, None).start()
    try:
        d.wait_for("/readyz")
        source = tmp_path / "events.jsonl"
        source.write_text(created().decode() + "\n")
        env = {**os.environ, "BILLING_GATEWAY_DATA_DIR": str(d.data_dir)}
        done = subprocess.run([*CLI, "publish", str(source)], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "published 1, duplicates 0, rejected 0"
        deadline = time.monotonic() + 10
        while d.request("GET", "/v1/budgets/cus_1")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert d.request("GET", "/v1/budgets/cus_1")[0] == 200
        assert (d.data_dir / "nats.url").read_text().startswith("nats://127.0.0.1:")
        assert d.terminate() == 0
    finally:
        if d.process is not None and d.process.poll() is None:
            d.kill9()
