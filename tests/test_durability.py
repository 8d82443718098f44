"""What the daemon keeps through restarts: spends, holds and unreported usage, through
SIGTERM and ``kill -9``, against a real nats-server and the real ``consume`` process."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
from billing_gateway import Gateway
from billing_gateway.natsd import EmbeddedNats
from billing_gateway.snapshots import SnapshotStore

from .conftest import created
from .processes import Daemon, publish_all

UNIT = 1_000_000


def current(sub: str = "sub_1", cus: str = "cus_1", total: str = "10") -> bytes:
    """A subscription whose period contains the real clock (the daemon runs in real time)."""
    now = datetime.now(UTC)
    return created(sub, cus, total=total, ts=now, start=now - timedelta(days=1), end=now + timedelta(days=29))


def spent(d: Daemon, tenant: str = "cus_1") -> int:
    status, budget = d.request("GET", f"/v1/budgets/{tenant}")
    assert status == 200, budget
    return int(budget["spent"])


def wait_until(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError("condition not met in time")


def test_spends_survive_sigterm_and_restart(tmp_path: Path, server: EmbeddedNats) -> None:
    """Issue 7.1: ten spends against a budget of ten, SIGTERM, restart: still spent."""
    publish_all(server.url, [current()])
    d = Daemon(tmp_path, server.url, "--snapshot-every", "3600").start()  # only the final snapshot
    d.wait_for("/readyz")
    wait_until(lambda: d.request("GET", "/v1/budgets/cus_1")[0] == 200)
    for _ in range(10):
        assert d.post("/v1/spend", {"tenant_id": "cus_1", "amount": UNIT})[0] == 200
    assert d.terminate() == 0
    assert "writing a final snapshot" in d.log.read_text()
    assert Gateway.restore(d.snapshot.read_bytes()).budget("cus_1").spent == 10 * UNIT  # type: ignore[union-attr]

    d.start()
    d.wait_for("/readyz")
    assert spent(d) == 10 * UNIT
    status, decision = d.post("/v1/spend", {"tenant_id": "cus_1", "amount": 1})
    assert (status, decision["reason"]) == (403, "insufficient_budget")
    assert d.terminate() == 0


def test_kill_9_loses_at_most_the_snapshot_interval(tmp_path: Path, server: EmbeddedNats) -> None:
    """Issue 7.1: the loss window of ``kill -9`` is the snapshot interval (README: at most
    the spend of the last ``--snapshot-every`` seconds, 1 s by default)."""
    interval = 0.5
    publish_all(server.url, [current(total="1000000")])
    d = Daemon(tmp_path, server.url, "--snapshot-every", str(interval), "--no-usage-report").start()
    d.wait_for("/readyz")
    wait_until(lambda: d.request("GET", "/v1/budgets/cus_1")[0] == 200)
    acknowledged: list[tuple[float, int]] = []
    for i in range(400):
        amount = 1 + i % 7
        assert d.post("/v1/spend", {"tenant_id": "cus_1", "amount": amount})[0] == 200
        acknowledged.append((time.monotonic(), amount))
    killed_at = time.monotonic()
    d.kill9()
    total = sum(a for _, a in acknowledged)
    safe = sum(a for t, a in acknowledged if t < killed_at - interval - 0.5)  # 0.5 s: writing it
    d.start()
    d.wait_for("/readyz")
    restored = spent(d)
    assert safe <= restored <= total, (safe, restored, total)
    assert d.terminate() == 0


def test_holds_and_commits_make_the_snapshot_due(tmp_path: Path, server: EmbeddedNats) -> None:
    """Every change of the table, not only the cursor, makes the next snapshot due."""
    publish_all(server.url, [current()])
    d = Daemon(tmp_path, server.url, "--snapshot-every", "0.2").start()
    d.wait_for("/readyz")
    wait_until(lambda: d.request("GET", "/v1/budgets/cus_1")[0] == 200)
    assert d.post("/v1/spend", {"tenant_id": "cus_1", "amount": 3 * UNIT})[0] == 200

    def snapshot_spent() -> int:
        if not d.snapshot.exists():
            return -1
        restored = Gateway.restore(d.snapshot.read_bytes()).budget("cus_1")
        return restored.spent if restored else -1

    wait_until(lambda: snapshot_spent() == 3 * UNIT, timeout=5)
    d.kill9()
    d.start()
    d.wait_for("/readyz")
    assert spent(d) == 3 * UNIT
    assert d.terminate() == 0


def usage_reported(url: str) -> list[dict[str, object]]:
    async def body() -> list[dict[str, object]]:
        nc = await nats.connect(url)
        js = nc.jetstream()
        info = await js.stream_info("BILLING_EVENTS")
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg("BILLING_EVENTS", seq)
            if msg.subject == "billing.events.usage.reported":
                found.append(json.loads(msg.data or b"{}"))
        await nc.close()
        return found

    return asyncio.run(body())


def test_the_daemon_reports_usage(tmp_path: Path, server: EmbeddedNats) -> None:
    """Issue 7.10: a /v1/spend reaches billing as usage.reported, by default."""
    publish_all(server.url, [current()])
    d = Daemon(tmp_path, server.url, "--usage-every", "0.2").start()
    d.wait_for("/readyz")
    wait_until(lambda: d.request("GET", "/v1/budgets/cus_1")[0] == 200)
    assert d.post("/v1/spend", {"tenant_id": "cus_1", "amount": 2_500_000})[0] == 200
    wait_until(lambda: len(usage_reported(server.url)) == 1)
    (event,) = usage_reported(server.url)
    data = event["data"]
    assert isinstance(data, dict)
    assert (data["tenant_id"], data["subscription_id"], data["amount"]) == ("cus_1", "sub_1", 2_500_000)
    assert d.terminate() == 0


def test_unreported_usage_survives_a_restart(tmp_path: Path) -> None:
    """Issue 7.10: usage drained while the broker is down is kept in the snapshot (its meta)
    and reported after a restart, exactly once (its event id comes from its idempotency key)."""
    server = EmbeddedNats(tmp_path / "nats").start()
    port = server.port
    try:
        publish_all(server.url, [current()])
        d = Daemon(tmp_path, server.url, "--usage-every", "0.2").start()
        d.wait_for("/readyz")
        wait_until(lambda: d.request("GET", "/v1/budgets/cus_1")[0] == 200)
        server.stop()
        assert d.post("/v1/spend", {"tenant_id": "cus_1", "amount": 1_250_000})[0] == 200
        time.sleep(1.0)  # the reporter drains it and fails to publish
        assert d.terminate() == 0
        meta = SnapshotStore(d.snapshot).load_state()
        assert [r.amount for r in meta.unsent_usage] == [1_250_000]

        server = EmbeddedNats(tmp_path / "nats", port).start()
        d.start()
        wait_until(lambda: len(usage_reported(server.url)) == 1)
        d.kill9()
        d.start()  # reported once more from the same snapshot at worst: the same event id
        time.sleep(1.0)
        events = usage_reported(server.url)
        assert [e["data"]["amount"] for e in events] == [1_250_000]  # type: ignore[index]
        assert d.terminate() == 0
    finally:
        server.stop()


def test_a_snapshot_taken_earlier_never_overwrites_a_later_one(tmp_path: Path) -> None:
    """The daemon takes snapshots on its event loop and writes them on a worker thread; a
    write that lands late (an older snapshot) is dropped, so the file never goes back."""
    gw = Gateway()
    gw.apply(current(total="10"))
    store = SnapshotStore(tmp_path / "gw.snap")
    older = store.prepare(gw, 1)
    assert gw.try_spend("cus_1", 3_000_000)
    newer = store.prepare(gw, 2)
    assert newer() > 0
    assert older() == 0, "dropped: a later snapshot is on disk"
    restored = store.load_state()
    assert restored.gateway.cursor == 2
    assert restored.gateway.budget("cus_1").spent == 3_000_000  # type: ignore[union-attr]
