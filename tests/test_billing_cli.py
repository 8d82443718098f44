"""``billing-gateway billing`` as real processes: keys, and ``serve`` (API, dispatcher,
scheduler, usage ingestion) on the embedded nats-server, followed by a gateway daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from billing_gateway.billing.client import BillingClient
from billing_gateway.natsd import free_port

from .test_daemon import Daemon

CLI = [sys.executable, "-m", "billing_gateway.cli"]


def test_keys_create_prints_a_working_key_once(tmp_path: Path) -> None:
    db = str(tmp_path / "billing.db")
    done = subprocess.run(
        [*CLI, "billing", "--db", db, "keys", "create", "--scope", "billing:plans:read"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    secret = done.stdout.strip()
    assert secret.startswith("bgk_") and "not shown again" in done.stderr
    assert secret not in Path(db).read_bytes().decode("latin-1"), "only its hash is stored"


def test_serve_end_to_end_with_a_gateway_daemon(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = str(tmp_path / "billing.db")
    env = {**os.environ, "BILLING_GATEWAY_DATA_DIR": str(data)}
    key = subprocess.run(
        [*CLI, "billing", "--db", db, "keys", "create", "--scope", "billing:*"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout.strip()  # fmt: skip
    port = free_port()
    with open(tmp_path / "billing.log", "wb") as log:
        billing = subprocess.Popen(
            [*CLI, "billing", "--db", db, "serve", "--http", f"127.0.0.1:{port}", "--cycle-every", "0.2"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    gateway = Daemon(tmp_path / "gw", None)
    (tmp_path / "gw").mkdir()
    gateway.data_dir = data  # the same embedded nats-server
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/openapi.json", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        gateway.start()
        with BillingClient(url, key) as c:
            c.create_plan(id="plan_pro", name="Pro", currency="USD", included_budget="25", price="9")
            customer = c.create_customer("Acme", "a@acme.io")
            c.create_subscription(customer.id, "plan_pro")
            deadline = time.monotonic() + 20
            while (
                gateway.request("GET", f"/v1/budgets/{customer.id}")[0] != 200 and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            status, budget = gateway.request("GET", f"/v1/budgets/{customer.id}")
            assert status == 200 and budget["total"] == 25_000_000 and budget["plan_id"] == "plan_pro"
            assert budget["decimal"]["total"] == "25"
            status, decision = gateway.post("/v1/spend", {"tenant_id": customer.id, "amount": 30_000_000})
            assert status == 403 and decision["reason"] == "insufficient_budget"
        billing.send_signal(signal.SIGTERM)
        assert billing.wait(30) == 0, "SIGTERM stops the API and its loops cleanly"
        assert gateway.terminate() == 0
    finally:
        for process in (billing, gateway.process):
            if process is not None and process.poll() is None:
                process.kill()
