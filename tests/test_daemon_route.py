"""``POST /v1/route`` of the ``consume`` daemon, a real process on a real nats-server: routes
from policies that arrive as events, hostile input answered 400 naming the field, routing
counters in /metrics; and the whole way from billing's API to a gateway's answer, on SQLite
and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from billing_gateway.natsd import EmbeddedNats
from billing_gateway.snapshots import SnapshotStore

from .billing_fixtures import Api, BillingServer, billing_servers, nats_url, pg_url
from .conftest import NOW, START, created, event
from .processes import Daemon, publish_all

__all__ = ["billing_servers", "nats_url", "pg_url"]  # fixtures used here


def policy(
    policy_id: str,
    priority: int,
    expression: str,
    targets: list[str],
    *,
    ts: Any = NOW,
    strategy: str = "failover",
) -> bytes:
    data = {
        "id": policy_id,
        "priority": priority,
        "match_expression": expression,
        "strategy": strategy,
        "targets": [{"name": t, "weight": 1, "cost": 0} for t in targets],
    }
    return event("routing_policy.upserted", data, ts=ts)


def publish(d: Daemon, url: str, events: list[bytes]) -> None:
    """Publishes once the daemon follows the stream it created (never racing its creation)."""
    d.wait_for("/readyz")
    publish_all(url, events)


def until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise TimeoutError(f"not within {timeout}s")


def routed(d: Daemon, doc: dict[str, Any], expected: int = 200) -> Callable[[], Any]:
    def check() -> Any:
        status, answer = d.post("/v1/route", doc)
        return answer if status == expected else None

    return check


def test_route_answers_from_policies_that_arrive_as_events(daemon: Daemon, server: EmbeddedNats) -> None:
    publish(
        daemon,
        server.url,
        [
            created(total="10", start=START, end=NOW + timedelta(days=3650)),
            policy("gpt", 10, "request.model == 'gpt-4o'", ["openai", "azure"]),
            policy("cheap", 5, "has(budget.total) && budget.remaining_fraction < 0.5", ["mini"]),
            policy("nested", 20, "request.meta.tier in ['gold', 'silver']", ["premium"]),
        ],
    )
    assert until(routed(daemon, {"attrs": {"meta": {"tier": "gold"}}}))["target"] == "premium", "all applied"
    doc = daemon.post("/v1/route", {"tenant_id": "cus_1", "attrs": {"model": "gpt-4o"}})[1]
    assert doc == {"policy_id": "gpt", "target": "openai", "fallbacks": ["azure"]}
    assert (
        daemon.post("/v1/route", {"tenant_id": None, "attrs": {"model": "gpt-4o"}})[1]["policy_id"] == "gpt"
    )
    assert daemon.post("/v1/route", {"attrs": {"meta": {"tier": "bronze"}}})[0] == 404
    status, answer = daemon.post("/v1/route", {"tenant_id": "cus_1", "attrs": {"model": "claude"}})
    assert status == 404 and answer["error"]

    assert daemon.post("/v1/spend", {"tenant_id": "cus_1", "amount": 6_000_000})[0] == 200
    steered = daemon.post("/v1/route", {"tenant_id": "cus_1", "attrs": {"model": "gpt-4o"}})[1]
    assert steered["policy_id"] == "cheap", "40% of the budget left: the cheaper policy comes first"

    publish(
        daemon, server.url, [event("routing_policy.deleted", {"policy_id": "cheap"}, ts=NOW + timedelta(1))]
    )
    until(lambda: daemon.post("/v1/route", {"tenant_id": "cus_1", "attrs": {"model": "gpt-4o"}})[1].get(
        "policy_id") == "gpt")  # fmt: skip

    metrics = daemon.request("GET", "/metrics")[1]
    assert "billing_gateway_routing_policies 2.0" in metrics
    assert "billing_gateway_route_no_match_total" in metrics
    assert "billing_gateway_route_evaluation_errors_total" in metrics
    # "claude" matched nothing: at least that answer was counted.
    no_match = next(
        line for line in metrics.splitlines() if line.startswith("billing_gateway_route_no_match_total")
    )
    assert float(no_match.split()[-1]) >= 1


def test_a_policy_that_does_not_compile_is_dead_lettered(daemon: Daemon, server: EmbeddedNats) -> None:
    publish(
        daemon, server.url, [policy("bad", 1, "request.model ==", ["x"]), policy("good", 2, "true", ["y"])]
    )
    assert until(routed(daemon, {"attrs": {}}))["policy_id"] == "good"
    metrics = daemon.request("GET", "/metrics")[1]
    assert 'billing_gateway_dead_letters_total{kind="invalid_event"} 1.0' in metrics


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"tenant_id": "x"}', "attrs"),
        (b'{"attrs": []}', "attrs"),
        (b'{"attrs": "model"}', "attrs"),
        (b'{"tenant_id": 5, "attrs": {}}', "tenant_id"),
        (b'{"tenant_id": "", "attrs": {}}', "tenant_id"),
        (b'{"tenant_id": "' + b"x" * 300 + b'", "attrs": {}}', "tenant_id"),
        (b'{"attrs": {"n": ' + b"9" * 5000 + b"}}", None),
        (b'{"attrs": {"a": ' + b"[" * 20_000 + b"]" * 20_000 + b"}}", None),
        (b'{"attrs": {"a": "\\ud800"}}', None),
        (b'{"attrs": {"\\ud800": 1}}', None),
        (b"\xff", None),
        (b"", None),
        (b"null", None),
    ],
)
def test_hostile_route_requests_are_400(
    daemon: Daemon, server: EmbeddedNats, body: bytes, field: str | None
) -> None:
    publish(daemon, server.url, [policy("all", 1, "has(request.n) || has(request.a) || true", ["x"])])
    until(routed(daemon, {"attrs": {}}))
    status, answer = daemon.request("POST", "/v1/route", body)
    assert status == 400, answer
    assert isinstance(answer, dict) and answer["error"]
    if field is not None:
        assert answer["field"] == field, answer
    assert daemon.post("/v1/route", {"attrs": {}})[0] == 200, "still serving"
    log = daemon.log.read_text()
    assert "Traceback" not in log and "level=ERROR" not in log, log


def test_policies_survive_kill_9_and_route_with_the_broker_down(daemon: Daemon, server: EmbeddedNats) -> None:
    """The snapshot holds the policies and their tombstones: killed with ``-9`` and restarted
    while the broker is down, the daemon routes at once from what it had."""
    publish(daemon, server.url, [
        policy("gone", 1, "true", ["old"]),
        policy("kept", 2, "true", ["a", "b"]),
        event("routing_policy.deleted", {"policy_id": "gone"}, ts=NOW + timedelta(1)),
    ])  # fmt: skip
    until(lambda: daemon.post("/v1/route", {"attrs": {}})[1].get("policy_id") == "kept")

    def snapshot_has_them() -> bool:
        if not daemon.snapshot.exists():
            return False
        restored = SnapshotStore(daemon.snapshot).load_state().gateway
        return [p.id for p in restored.policies()] == ["kept"]

    until(snapshot_has_them)
    daemon.kill9()
    server.stop()
    daemon.start()
    assert daemon.post("/v1/route", {"attrs": {}})[1] == {
        "policy_id": "kept",
        "target": "a",
        "fallbacks": ["b"],
    }


def test_a_value_no_policy_can_read_is_an_evaluation_error(daemon: Daemon, server: EmbeddedNats) -> None:
    """An integer beyond 64 bits is no CEL value: as in ``Gateway.route``, the policy that
    reads it does not match, and the error is counted."""
    publish(daemon, server.url, [policy("big", 1, "request.n > 0", ["x"])])
    until(routed(daemon, {"attrs": {"n": 1}}))
    status, answer = daemon.request("POST", "/v1/route", b'{"attrs": {"n": 18446744073709551616}}')
    assert (status, answer["field"]) == (404, None), answer
    metrics = daemon.request("GET", "/metrics")[1]
    assert "billing_gateway_route_evaluation_errors_total 1.0" in metrics
    assert "billing_gateway_route_no_match_total 1.0" in metrics


def test_an_oversized_route_request_is_refused(daemon: Daemon) -> None:
    status, _ = daemon.request("POST", "/v1/route", b'{"attrs": {"a": "' + b"x" * 100_000 + b'"}}')
    assert status == 413
    assert daemon.request("GET", "/healthz")[0] == 200


# ---- billing's API to a gateway's answer ------------------------------------------------------


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_billing_api_to_a_gateway_daemon_s_route(
    tmp_path: Path,
    nats_url: str,
    billing_servers: Callable[..., BillingServer],
    request: pytest.FixtureRequest,
    db: str,
) -> None:
    """A policy made, replaced and deleted through billing's API reaches a real ``consume``
    daemon through the outbox, the dispatcher and the stream; budget-aware routing follows
    the tenant's spend."""
    url = str(tmp_path / "billing.db") if db == "sqlite" else request.getfixturevalue("pg_url")
    billing = billing_servers(url).ready()
    from billing_gateway.billing.store import BillingStore

    store = BillingStore.open(url)
    _, key = store.create_api_key(["billing:*"])
    store.engine.dispose()
    daemon = Daemon(tmp_path, nats_url).start()
    api = Api(billing.url, key)
    try:
        assert api.post("/plans", {"id": "pro", "name": "Pro", "currency": "USD",
                                   "included_budget": "10", "price": "1"}).status_code == 201  # fmt: skip
        customer = api.post("/customers", {"name": "Acme", "email": "a@acme.io"}).json()["id"]
        assert api.post("/subscriptions", {"customer_id": customer, "plan_id": "pro"}).status_code == 201
        rule = {
            "priority": 10,
            "match_expression": "request.model == 'gpt-4o'",
            "strategy": "least_cost",
            "targets": [{"name": "openai", "cost": "0.0025"}, {"name": "azure", "cost": "0.002"}],
        }
        assert api.post("/routing-policies", {"id": "gpt", **rule}).status_code == 201
        thrifty = {
            "priority": 5,
            "match_expression": "budget.remaining_fraction < 0.5",
            "strategy": "failover",
            "targets": [{"name": "mini"}],
        }
        assert api.post("/routing-policies", {"id": "thrifty", **thrifty}).status_code == 201
        ask = {"tenant_id": customer, "attrs": {"model": "gpt-4o"}}
        daemon.wait_for(f"/v1/budgets/{customer}", timeout=60)
        doc = until(routed(daemon, ask), timeout=60)
        assert doc == {"policy_id": "gpt", "target": "azure", "fallbacks": ["openai"]}, "the cheaper first"

        assert daemon.post("/v1/spend", {"tenant_id": customer, "amount": 6_000_000})[0] == 200
        until(lambda: daemon.post("/v1/route", ask)[1].get("target") == "mini", timeout=60)  # under half left

        replaced = api.send("PUT", "/routing-policies/thrifty", {**thrifty, "priority": 50})
        assert replaced.status_code == 200, replaced.text
        until(lambda: daemon.post("/v1/route", ask)[1].get("target") == "azure", timeout=60)

        assert api.send("DELETE", "/routing-policies/gpt").status_code == 200
        until(lambda: daemon.post("/v1/route", ask)[1].get("target") == "mini", timeout=60)
        assert api.send("DELETE", "/routing-policies/thrifty").status_code == 200
        until(lambda: daemon.post("/v1/route", ask)[0] == 404, timeout=60)

        bad = api.post("/routing-policies", {**rule, "match_expression": "request.model =="})
        assert bad.status_code == 422
        assert httpx.get(f"{billing.url}/metrics").status_code == 200
    finally:
        api.close()
        daemon.terminate()
