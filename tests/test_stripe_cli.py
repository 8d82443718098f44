"""``billing-gateway billing stripe events`` and ``stripe retry`` as real processes, and
their errors (and a bad ``STRIPE_*`` variable at ``serve``) as one line with exit code 2."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from billing_gateway.billing.store import BillingStore
from billing_gateway.billing.stripe import inbox
from billing_gateway.billing.stripe.objects import decode_event
from billing_gateway.billing.stripe.settings import StripeSettings
from billing_gateway.billing.stripe.worker import StripeWorker
from billing_gateway.natsd import free_port

from .processes import CLI
from .stripe_payloads import body, customer, event, subscription


def cli(db: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "billing", "--db", db, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_events_are_listed_and_dead_ones_retried(tmp_path: Path) -> None:
    db = str(tmp_path / "billing.db")
    store = BillingStore.open(db)
    dead = event(
        "customer.subscription.created",
        subscription("sub_1Cli", "cus_C", tenant_id="t_c", price_id="price_x"),
    )
    for evt in (event("customer.created", customer("cus_C", tenant_id="t_c")), dead):
        payload = body(evt)
        inbox.receive(store, decode_event(payload), payload)
    StripeWorker(store, StripeSettings(), max_attempts=1).drain()
    listed = cli(db, "stripe", "events")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["SEQ", "EVENT_ID", "EVENT_TYPE", "OBJECT", "STATUS", "ATTEMPTS", "LAST_ERROR"]
    assert "processed" in lines[1] and "dead" in lines[2] and "no plan for its prices (price_x)" in lines[2]
    assert listed.stderr.strip() == "2 of 2 Stripe events"
    only_dead = cli(db, "stripe", "events", "--status", "dead", "--limit", "1")
    assert len(only_dead.stdout.splitlines()) == 2 and dead["id"] in only_dead.stdout
    retried = cli(db, "stripe", "retry", dead["id"])
    assert retried.returncode == 0 and retried.stdout.strip().startswith("retrying 1 Stripe event")
    assert inbox.list_rows(store, "pending")[0].event_id == dead["id"]
    store.engine.dispose()


def test_errors_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    db = str(tmp_path / "billing.db")
    BillingStore.open(db).engine.dispose()
    cases = {
        ("stripe", "retry"): "give --all or the id of each event",
        ("stripe", "retry", "--all", "evt_1"): "give --all or the id of each event",
        ("stripe", "retry", "evt_missing"): "no Stripe event evt_missing",
        ("stripe", "events", "--status", "lost"): "invalid choice",
        ("stripe", "events", "--limit", "0"): "expected an integer in 1..1000000",
        ("stripe", "retry", "evt\x01"): "expected a Stripe event id",
        ("stripe",): "required",
    }
    for args, message in cases.items():
        done = cli(db, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_serve_refuses_a_bad_stripe_variable_in_one_line(tmp_path: Path) -> None:
    http = f"127.0.0.1:{free_port()}"
    done = cli(str(tmp_path / "b.db"), "serve", "--http", http, STRIPE_PRODUCT_PRICE_MAP="plan_a")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "billing-gateway billing: error: STRIPE_PRODUCT_PRICE_MAP: expected plan_id=price_id, got 'plan_a'"
    ]
