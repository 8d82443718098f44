"""The Billing API's ``/routing-policies`` resource, through BillingClient and raw HTTP, on
SQLite and on PostgreSQL: every change is compiled as a gateway compiles it, written to the
outbox in its transaction, and a gateway applying the outbox ends with billing's policies."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from billing_gateway import ApplyOutcome, Gateway, InvalidPolicy, RoutingPolicy, Target
from billing_gateway.billing.client import Conflict, Forbidden, NotFound
from billing_gateway.billing.store import BillingStore

from .billing_fixtures import Api, race
from .conftest import Service

CHEAP = {"name": "openai/gpt-4o-mini", "weight": 1, "cost": "0.00015"}
SMART = {"name": "openai/gpt-4o", "weight": 3, "cost": "0.0025"}


def body(**fields: Any) -> dict[str, Any]:
    """A valid policy body, with ``fields`` replaced."""
    return {
        "priority": 10,
        "match_expression": "request.model == 'gpt-4o' && budget.remaining_fraction > 0.2",
        "strategy": "failover",
        "targets": [SMART, CHEAP],
    } | fields


def outbox(store: BillingStore) -> list[dict[str, Any]]:
    """The routing events in the outbox, oldest first."""
    docs = [msgspec.json.decode(p) for _, p in store.list_events(limit=10_000)]
    return [d for d in docs if d["event_type"].startswith("routing_policy.")]


def followed(store: BillingStore) -> Gateway:
    """A gateway that applied the whole outbox."""
    gw = Gateway()
    for _, payload in store.list_events(limit=10_000):
        gw.apply(payload)
    return gw


def test_create_read_replace_delete_and_the_outbox(service: Service) -> None:
    with service.client() as c:
        made = c.create_routing_policy(id="smart", **body())
        assert (made.id, made.priority, made.strategy) == ("smart", 10, "failover")
        assert [(t.name, t.weight, t.cost) for t in made.targets] == [
            ("openai/gpt-4o", 3, Decimal("0.0025")),
            ("openai/gpt-4o-mini", 1, Decimal("0.00015")),
        ]
        assert c.get_routing_policy("smart") == made
        sdk = [Target("openai/gpt-4o-mini", 1, 150)]  # the SDK's Target: cost in micro-units
        fallback = c.create_routing_policy(**body(priority=-5, match_expression="true", targets=sdk))
        assert fallback.targets[0].cost == Decimal("0.00015")
        assert fallback.id.startswith("rp_")
        assert [p.id for p in c.list_routing_policies()] == [fallback.id, "smart"], "ascending priority"

        replaced = c.replace_routing_policy("smart", **body(priority=20, strategy="least_cost"))
        assert (replaced.priority, replaced.strategy, replaced.created_at) == (
            20,
            "least_cost",
            made.created_at,
        )
        assert replaced.updated_at > made.updated_at
        assert c.delete_routing_policy(fallback.id).deleted
        with pytest.raises(NotFound):
            c.get_routing_policy(fallback.id)
        with pytest.raises(NotFound):
            c.delete_routing_policy(fallback.id)
        assert [p.id for p in c.list_routing_policies()] == ["smart"]
        with pytest.raises(Conflict):
            c.create_routing_policy(id="smart", **body())

    kinds = [
        (e["event_type"], e["data"].get("id") or e["data"].get("policy_id")) for e in outbox(service.store)
    ]
    assert kinds == [
        ("routing_policy.upserted", "smart"),
        ("routing_policy.upserted", fallback.id),
        ("routing_policy.upserted", "smart"),
        ("routing_policy.deleted", fallback.id),
    ]
    first = outbox(service.store)[0]
    assert first["data"]["targets"][1] == {"name": "openai/gpt-4o-mini", "weight": 1, "cost": 150}, (
        "cost in integer micro-units on the wire, converted exactly"
    )
    assert "tenant_id" not in first, "a policy belongs to no tenant"
    assert followed(service.store).policies() == [
        RoutingPolicy(
            "smart", 20, body()["match_expression"], "least_cost",
            (Target("openai/gpt-4o", 3, 2500), Target("openai/gpt-4o-mini", 1, 150)),
        )
    ]  # fmt: skip


def test_put_creates_and_a_deleted_id_comes_back(service: Service) -> None:
    with service.client() as c:
        c.replace_routing_policy("p", **body())
        assert c.get_routing_policy("p").priority == 10
        c.delete_routing_policy("p")
        again = c.create_routing_policy(id="p", **body(priority=3))
        assert again.priority == 3 and [p.id for p in c.list_routing_policies()] == ["p"]
    assert [p.priority for p in followed(service.store).policies()] == [3]


# ---- refusals ----------------------------------------------------------------------------------

BAD_EXPRESSIONS = {
    "syntax": "request.model == ",
    "unbalanced": "(request.model == 'x'",
    "not boolean": "1 + 2",
    "other variable": "tenant.plan == 'pro'",
    "unknown budget field": "budget.credits > 1",
    "bad regex": "request.model.matches('[')",
}


@pytest.mark.parametrize("case", sorted(BAD_EXPRESSIONS))
def test_an_expression_a_gateway_would_refuse_is_422_naming_it(service: Service, case: str) -> None:
    expression = BAD_EXPRESSIONS[case]
    expected = Gateway()
    with pytest.raises(InvalidPolicy) as compiled:
        expected.set_policies([RoutingPolicy("p", 1, expression, "failover", (Target("a"),))])
    api = Api(service.url, service.admin_key)
    try:
        answer = api.post("/routing-policies", body(id="p", match_expression=expression))
    finally:
        api.close()
    assert answer.status_code == 422, answer.text
    doc = answer.json()
    problem = compiled.value.problem
    assert problem in doc["detail"] and "routing policy p" in doc["detail"]
    position = compiled.value.position
    assert doc["extra"][0]["position"] == position
    if position is not None:
        assert f"position {position}" in doc["detail"]
        assert doc["extra"][0]["key"] == "match_expression"
    assert outbox(service.store) == [] and service.store.list_routing_policies() == [], "nothing written"


BAD_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    "no targets": (body(targets=[]), "target"),
    "unknown strategy": (body(strategy="round_robin"), "round_robin"),
    "negative weight": (body(targets=[{"name": "a", "weight": -1}]), "weight"),
    "negative cost": (body(targets=[{"name": "a", "cost": "-0.5"}]), "cost"),
    "cost below a micro-unit": (body(targets=[{"name": "a", "cost": "0.0000001"}]), "targets[0].cost"),
    "cost as a float": (body(targets=[{"name": "a", "cost": 0.5}]), "cost"),
    "huge cost": (body(targets=[{"name": "a", "cost": "1000000001"}]), "targets[0].cost"),
    "blank target": (body(targets=[{"name": ""}]), "name"),
    "target with a space": (body(targets=[{"name": "a b"}]), "name"),
    "NUL in the expression": (body(match_expression="true\x00"), "match_expression"),
    "long expression": (body(match_expression="true" + " " * 4096), "match_expression"),
    "priority beyond 64 bits": (body(priority=2**63), "priority"),
    "unknown field": (body(colour="blue"), "colour"),
    "bad id": (body(id="no spaces"), "id"),
    "missing strategy": ({k: v for k, v in body().items() if k != "strategy"}, "strategy"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_every_kind_of_bad_policy_is_422_naming_the_field(service: Service, case: str) -> None:
    doc, named = BAD_BODIES[case]
    api = Api(service.url, service.admin_key)
    try:
        answers = [api.post("/routing-policies", doc)]
        if case != "bad id":  # PUT takes its id from the path
            rule = {k: v for k, v in doc.items() if k != "id"}
            answers.append(api.send("PUT", "/routing-policies/p", rule))
    finally:
        api.close()
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert named in answer.json()["detail"]
    assert outbox(service.store) == [] and service.store.list_routing_policies() == [], "nothing written"


def test_malformed_json_and_bad_ids_in_paths(service: Service) -> None:
    api = Api(service.url, service.admin_key)
    try:
        raw = api.http.post(
            "/routing-policies", content=b"{nope", headers={"Content-Type": "application/json"}
        )
        assert raw.status_code == 400
        assert api.get("/routing-policies/" + "x" * 65).status_code in (400, 404, 422)
        assert api.send("DELETE", "/routing-policies/no%20such").status_code in (400, 404, 422)
        assert api.get("/routing-policies/missing").status_code == 404
    finally:
        api.close()


# ---- keys, idempotency, order ----------------------------------------------------------------------


def test_scopes_and_customer_bound_keys(service: Service) -> None:
    with service.client() as c:
        c.create_routing_policy(id="p", **body())
        customer = c.create_customer("Acme", "ops@acme.io").id
    _, reader = service.store.create_api_key(["billing:routing:read"])
    with service.client(reader) as c:
        assert [p.id for p in c.list_routing_policies()] == ["p"]
        for write in (
            lambda: c.create_routing_policy(**body()),
            lambda: c.replace_routing_policy("p", **body()),
            lambda: c.delete_routing_policy("p"),
        ):
            with pytest.raises(Forbidden, match="billing:routing:write"):
                write()
    _, writer = service.store.create_api_key(["billing:routing:write"])
    with service.client(writer) as c, pytest.raises(Forbidden, match="billing:routing:read"):
        c.get_routing_policy("p")
    _, bound = service.store.create_api_key(["billing:*"], customer_id=customer)
    with service.client(bound) as c:
        assert c.get_routing_policy("p").id == "p"
        with pytest.raises(Forbidden, match="customer-bound"):
            c.replace_routing_policy("p", **body(priority=99))
    assert len(outbox(service.store)) == 1


def test_idempotency_keys_replay_writes(service: Service) -> None:
    with service.client() as c:
        first = c.create_routing_policy(**body(), idempotency_key="rp-1")
        assert c.create_routing_policy(**body(), idempotency_key="rp-1") == first, "replayed, not a second id"
        with pytest.raises(Conflict, match="another request"):
            c.create_routing_policy(**body(priority=1), idempotency_key="rp-1")
        assert c.delete_routing_policy(first.id, idempotency_key="del-1").deleted
        assert c.delete_routing_policy(first.id, idempotency_key="del-1").deleted, "replayed, not a 404"
    assert [e["event_type"] for e in outbox(service.store)] == [
        "routing_policy.upserted",
        "routing_policy.deleted",
    ]
    assert outbox(service.store)[0]["correlation_id"] == "rp-1"


def test_events_of_one_policy_stay_in_order_when_the_clock_goes_back(service: Service) -> None:
    """Several billing replicas' clocks disagree: each event of a policy is still later than
    the one before, so a gateway's last-writer-wins agrees with billing's order."""
    store = service.store
    now = store.clock()
    with service.client() as c:
        c.create_routing_policy(id="p", **body(priority=1))
        store.clock = lambda: now - timedelta(hours=1)
        c.replace_routing_policy("p", **body(priority=2))
        c.delete_routing_policy("p")
        c.create_routing_policy(id="p", **body(priority=3))
    stamps = [datetime.fromisoformat(e["timestamp"]) for e in outbox(store)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 4
    for order in (list(outbox(store)), list(reversed(outbox(store)))):  # any arrival order
        gw = Gateway()
        for e in order:
            gw.apply(msgspec.json.encode(e))
        assert [p.priority for p in gw.policies()] == [3]


def test_a_gateway_rebuilds_its_policies_from_budget_events(service: Service) -> None:
    with service.client() as c:
        for i in range(3):
            c.create_routing_policy(id=f"p{i}", **body(priority=i))
        c.replace_routing_policy("p1", **body(priority=7))
        c.delete_routing_policy("p0")
        stale = Gateway()
        for e in outbox(service.store)[:1]:  # saw p0 created, then lost the rest of the stream
            stale.apply(msgspec.json.encode(e))
        state = c.budget_events()
    outcomes = [stale.apply(e) for e in state]
    assert ApplyOutcome.APPLIED in outcomes
    assert stale.policies() == followed(service.store).policies()
    assert [p.id for p in stale.policies()] == ["p2", "p1"]
    assert [stale.apply(e) for e in state] == [ApplyOutcome.DUPLICATE] * len(state), "same state, same ids"


def test_racing_writes_to_one_policy_leave_gateways_where_billing_is(service: Service) -> None:
    """Eight clients replace (and one deletes) the same policy at once: whichever order the
    database serialised them in, the events carry it, so a gateway applying the outbox in
    any order ends with billing's row."""
    with service.client() as c:
        c.create_routing_policy(id="p", **body(priority=0))

    def put(priority: int) -> Callable[[], object]:
        def call() -> object:
            with service.client() as c:
                return c.replace_routing_policy("p", **body(priority=priority))

        return call

    for _ in range(3):
        race(*[put(i) for i in range(1, 9)])
        held = service.store.get_routing_policy("p")
        assert held is not None
        stamps = [e["timestamp"] for e in outbox(service.store)]
        assert len(set(stamps)) == len(stamps), "no two events of the policy share a timestamp"
        for order in (outbox(service.store), list(reversed(outbox(service.store)))):
            gw = Gateway()
            for e in order:
                gw.apply(msgspec.json.encode(e))
            assert [p.priority for p in gw.policies()] == [held.policy.priority]
