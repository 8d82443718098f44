"""Issue 7.3: a wiped or recreated stream, and a broker outage, seen by the daemon.

A real nats-server is stopped, its store emptied, and started again on the same port:
the daemon must notice that the stream behind its cursor is not the one it counted in,
say so (not ready, metric, log), and follow the new stream from its start (or rebuild
from billing first when it knows billing)."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import nats
from billing_gateway.natsd import EmbeddedNats

from .conftest import Service, updated
from .processes import Daemon, publish_all
from .test_durability import UNIT, current, wait_until


def metric(d: Daemon, name: str) -> float:
    status, text = d.request("GET", "/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_readyz_is_503_while_the_broker_is_unreachable(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        d = Daemon(tmp_path, server.url).start()
        d.wait_for("/readyz")
        server.stop()
        wait_until(lambda: d.request("GET", "/readyz")[0] == 503)
        server = EmbeddedNats(tmp_path / "nats", server.port).start()
        d.wait_for("/readyz")
        log = d.log.read_text()
        assert "disconnected from NATS" in log and "reconnected to NATS" in log
        assert "Traceback" not in log
        assert d.terminate() == 0
    finally:
        server.stop()


def test_a_wiped_stream_is_detected_and_followed_from_its_start(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        # The old stream: the tenant, and enough events to put the cursor at 20.
        publish_all(server.url, [current(), *(current(f"sub_x{i}", f"cus_x{i}") for i in range(19))])
        d = Daemon(tmp_path, server.url, "--no-usage-report").start()
        assert d.wait_for("/readyz")["cursor"] == 20
        assert d.post("/v1/spend", {"tenant_id": "cus_1", "amount": UNIT})[0] == 200

        server.stop()
        shutil.rmtree(tmp_path / "nats" / "jetstream")
        server = EmbeddedNats(tmp_path / "nats", server.port).start()
        # Billing (its dispatcher) publishes into the new stream: the cancellation is sequence 2.
        cancel = updated(status="canceled", ts=datetime.now(UTC))
        seqs = publish_all(server.url, [current("sub_9", "cus_9"), cancel])
        assert seqs == [1, 2]

        wait_until(lambda: d.request("GET", "/v1/budgets/cus_1")[1].get("status") == "canceled")
        status, decision = d.post("/v1/spend", {"tenant_id": "cus_1", "amount": 1})
        assert (status, decision["reason"]) == (403, "inactive")
        assert d.request("GET", "/v1/budgets/cus_9")[0] == 200
        ready = d.wait_for("/readyz")
        assert ready["cursor"] == 2 and ready["gap"] is False
        assert metric(d, "billing_gateway_stream_resets_total") == 1
        assert "STREAM RESET" in d.log.read_text()
        assert d.terminate() == 0

        # After a restart the snapshot's cursor (2) belongs to the new stream: nothing to repair.
        d.start()
        assert d.wait_for("/readyz")["cursor"] == 2
        assert metric(d, "billing_gateway_stream_resets_total") == 0
        assert d.terminate() == 0
    finally:
        server.stop()


def test_a_stream_recreated_while_the_daemon_was_down(tmp_path: Path) -> None:
    """The new stream grew past the old cursor before the daemon came back: only the
    stream's creation time (kept beside the snapshot) tells them apart."""
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        publish_all(server.url, [current(), current("sub_2", "cus_2")])
        d = Daemon(tmp_path, server.url).start()
        assert d.wait_for("/readyz")["cursor"] == 2
        assert d.terminate() == 0

        server.stop()
        shutil.rmtree(tmp_path / "nats" / "jetstream")
        server = EmbeddedNats(tmp_path / "nats", server.port).start()
        fresh = [current(f"sub_n{i}", f"cus_n{i}") for i in range(3)]
        publish_all(server.url, [*fresh, updated(status="canceled", ts=datetime.now(UTC))])  # sequences 1..4

        d.start()
        wait_until(lambda: d.request("GET", "/v1/budgets/cus_n0")[0] == 200)
        assert d.wait_for("/readyz")["cursor"] == 4
        assert d.request("GET", "/v1/budgets/cus_1")[1]["status"] == "canceled"
        assert d.terminate() == 0
    finally:
        server.stop()


def test_a_reset_rebuilds_from_billing_when_configured(tmp_path: Path, service: Service) -> None:
    """With --billing-url the table is brought up to date from GET /api/v1/budgets: a
    customer whose events were lost with the old stream appears in the gateway."""
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        with service.client() as c:
            c.create_plan(id="plan_pro", name="Pro", currency="USD", included_budget="25", price="9")
            customer = c.create_customer("Acme", "a@acme.io")
            c.create_subscription(customer.id, "plan_pro")  # no dispatcher: never published
        publish_all(server.url, [current()])
        d = Daemon(
            tmp_path, server.url, "--billing-url", service.url, "--billing-key", service.admin_key
        ).start()
        d.wait_for("/readyz")
        assert d.request("GET", f"/v1/budgets/{customer.id}")[0] == 404

        server.stop()
        shutil.rmtree(tmp_path / "nats" / "jetstream")
        server = EmbeddedNats(tmp_path / "nats", server.port).start()
        publish_all(server.url, [current("sub_9", "cus_9")])

        wait_until(lambda: d.request("GET", f"/v1/budgets/{customer.id}")[0] == 200)
        assert d.request("GET", f"/v1/budgets/{customer.id}")[1]["total"] == 25 * UNIT
        wait_until(lambda: d.request("GET", "/v1/budgets/cus_9")[0] == 200)
        assert metric(d, "billing_gateway_table_rebuilds_total") >= 1
        d.wait_for("/readyz")
        assert d.terminate() == 0
    finally:
        server.stop()


def test_a_retention_gap_is_repaired_from_billing(tmp_path: Path, service: Service) -> None:
    """Events after the cursor were dropped by retention: with billing configured the gap
    is repaired (ready again); the same daemon without billing stays not ready."""
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        publish_all(server.url, [current()])
        d = Daemon(
            tmp_path, server.url, "--billing-url", service.url, "--billing-key", service.admin_key
        ).start()
        assert d.wait_for("/readyz")["cursor"] == 1
        assert d.terminate() == 0
        (tmp_path / "plain").mkdir()
        plain = Daemon(tmp_path / "plain", server.url)
        shutil.copy(d.snapshot, plain.snapshot)  # the same cursor, 1, without billing
        publish_all(server.url, [current(f"sub_g{i}", f"cus_g{i}") for i in range(5)])
        _purge_up_to(server.url, 5)  # sequences 2..4 are gone
        d.start()
        d.wait_for("/readyz")
        assert metric(d, "billing_gateway_table_rebuilds_total") == 1
        assert d.terminate() == 0

        plain.start()
        time.sleep(1.5)
        status, body = plain.request("GET", "/readyz")
        assert status == 503 and body["gap"] is True
        assert plain.terminate() == 0
    finally:
        server.stop()


def _purge_up_to(url: str, seq: int) -> None:
    async def body() -> None:
        nc = await nats.connect(url)
        await nc.jetstream().purge_stream("BILLING_EVENTS", seq=seq)
        await nc.close()

    asyncio.run(body())
