"""``/routing-policies``: the rules every gateway routes by, shared by every customer.

Each policy is compiled as a gateway compiles it before anything is stored: one a gateway
would refuse is a 422 naming the problem (and its position in ``match_expression``). Each
change writes its ``routing_policy.*`` event to the outbox in its transaction; writes honour
``Idempotency-Key`` like every POST."""

from __future__ import annotations

from typing import Any

from litestar import Response, delete, get, post, put
from litestar.params import JSONBody, RawBody

from billing_gateway import RoutingPolicy as Policy
from billing_gateway import Target
from billing_gateway.billing.domain import NotFound
from billing_gateway.billing.store import BillingStore, RoutingPolicyRow
from billing_gateway.billing.store.base import new_id
from billing_gateway.billing.wire import (
    RoutingPolicy,
    RoutingPolicyBody,
    RoutingPolicyDeleted,
    RoutingPolicyIn,
    RoutingTarget,
)
from billing_gateway.money import from_micros

from .auth import need, unbound
from .common import PathId, Req, Store, Who, idempotent, micros

__all__ = ["HANDLERS"]

_SHARED = "change routing policies: they are shared by every customer"


def _policy(policy_id: str, body: RoutingPolicyBody) -> Policy:
    """The policy a request describes, costs in exact micro-units."""
    targets = []
    for i, t in enumerate(body.targets):
        cost = micros(t.cost, f"targets[{i}].cost")
        assert cost is not None
        targets.append(Target(t.name, t.weight, cost))
    return Policy(policy_id, body.priority, body.match_expression, body.strategy, tuple(targets))


def policy_out(row: RoutingPolicyRow) -> RoutingPolicy:
    p = row.policy
    targets = [RoutingTarget(t.name, t.weight, from_micros(t.cost)) for t in p.targets]
    return RoutingPolicy(
        p.id, p.priority, p.match_expression, p.strategy, targets, row.created_at, row.updated_at
    )


def _put(store: BillingStore, policy: Policy, replace: bool, key: str | None) -> Any:
    row, _ = store.put_routing_policy(policy, replace=replace, correlation_id=key)
    return policy_out(row)


@get("/routing-policies", sync_to_thread=True)
def list_policies(store: Store, who: Who) -> list[RoutingPolicy]:
    """Every policy, in the order a gateway tries them (ascending priority, then id)."""
    need(who, "billing:routing:read")
    return [policy_out(p) for p in store.list_routing_policies()]


@get("/routing-policies/{policy_id:str}", sync_to_thread=True)
def get_policy(store: Store, who: Who, policy_id: PathId) -> RoutingPolicy:
    need(who, "billing:routing:read")
    found = store.get_routing_policy(policy_id)
    if found is None:
        raise NotFound(f"routing policy {policy_id} not found")
    return policy_out(found)


@post("/routing-policies", status_code=201, sync_to_thread=True)
def create_policy(
    request: Req, body: RawBody, store: Store, who: Who, data: JSONBody[RoutingPolicyIn]
) -> Response[Any]:
    """A new policy (409 if one with its id exists; a deleted id may be used again)."""
    need(who, "billing:routing:write")
    unbound(who, _SHARED)
    policy = _policy(data.id or new_id("rp"), data)
    return idempotent(store, request, body, who, 201, lambda key: _put(store, policy, False, key))


@put("/routing-policies/{policy_id:str}", sync_to_thread=True)
def replace_policy(
    request: Req, body: RawBody, store: Store, who: Who, policy_id: PathId, data: JSONBody[RoutingPolicyBody]
) -> Response[Any]:
    """The policy with this id, created or replaced whole."""
    need(who, "billing:routing:write")
    unbound(who, _SHARED)
    policy = _policy(policy_id, data)
    return idempotent(store, request, body, who, 200, lambda key: _put(store, policy, True, key))


@delete("/routing-policies/{policy_id:str}", status_code=200, sync_to_thread=True)
def delete_policy(request: Req, body: RawBody, store: Store, who: Who, policy_id: PathId) -> Response[Any]:
    """Deletes the policy (404 if there is none): every gateway drops it."""
    need(who, "billing:routing:write")
    unbound(who, _SHARED)

    def run(key: str | None) -> RoutingPolicyDeleted:
        store.delete_routing_policy(policy_id, key)
        return RoutingPolicyDeleted(policy_id)

    return idempotent(store, request, body, who, 200, run)


HANDLERS = [list_policies, get_policy, create_policy, replace_policy, delete_policy]
