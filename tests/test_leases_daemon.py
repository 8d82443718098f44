"""``billing-gateway consume --redis-url``: two daemons share one budget through Redis
leases, answer ``/v1/spend`` from their slices, and show the leases in ``/metrics``."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis
from billing_gateway.natsd import EmbeddedNats

from .leases_support import UNIT, drop_prefix, unique_prefix
from .processes import CLI, Daemon, publish_all
from .test_durability import current


def test_two_daemons_share_one_budget(tmp_path: Path, server: EmbeddedNats, redis_url: str) -> None:
    prefix = unique_prefix()
    options = ("--redis-url", redis_url, "--lease-ttl", "1", "--lease-key-prefix", prefix)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    daemons = [
        Daemon(tmp_path / name, server.url, *options, "--replica-id", name).start() for name in ("a", "b")
    ]
    try:
        publish_all(server.url, [current(total="10")])
        for d in daemons:
            d.wait_for("/readyz")
        spent = 0
        # Both replicas spend until neither gets anything for a while; then one alone, while
        # the other is idle: its slice (a fragment smaller than a spend, it may be) comes
        # back, and the whole budget is spent, exactly once.
        for spenders, quiet_s in ((daemons, 2.0), (daemons[:1], 4.0)):
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < quiet_s:
                for d in spenders:
                    status, doc = d.post("/v1/spend", {"tenant_id": "cus_1", "amount": UNIT // 4})
                    assert status in (200, 403), doc
                    if status == 200:
                        spent, quiet_since = spent + UNIT // 4, time.monotonic()
                    else:
                        assert doc["reason"] in ("lease_exhausted", "insufficient_budget"), doc
                time.sleep(0.01)
        client = redis.Redis.from_url(redis_url)
        state = {k: client.hgetall(k) for k in client.scan_iter(f"{prefix}:*:[0-9]*")}
        client.close()
        budgets = [d.request("GET", "/v1/budgets/cus_1")[1] for d in daemons]
        assert spent == 10 * UNIT, f"the budget once across both daemons: {state} {budgets}"
        status, metrics = daemons[0].request("GET", "/metrics")
        assert status == 200
        for name in ("slices_held", "grants_total", "returns_total", "round_trips_total", "refusals_total"):
            assert f"billing_gateway_lease_{name}" in metrics, name
        assert 'billing_gateway_lease_refusals_total{reason="insufficient_budget"}' in metrics
        for d in daemons:
            assert d.terminate() == 0
    finally:
        for d in daemons:
            if d.process is not None and d.process.poll() is None:
                d.kill9()
        drop_prefix(redis_url, prefix)


def test_bad_lease_options_are_one_line_errors() -> None:
    for option, value, says in (
        ("--lease-ttl", "0.01", "lease-ttl"),
        ("--lease-ttl", "soon", "lease-ttl"),
        ("--lease-mode", "loose", "lease-mode"),
        ("--lease-key-prefix", "a{b}", "braces"),
        ("--replica-id", "a b", "whitespace"),
    ):
        run = subprocess.run([*CLI, "consume", option, value], capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, run.stderr
        assert run.stderr.count("\n") == 1 and says in run.stderr, run.stderr
