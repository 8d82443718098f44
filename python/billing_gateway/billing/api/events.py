"""``/events`` (the outbox history) and ``/budgets`` (the state a gateway rebuilds from:
budgets and routing policies)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import get
from litestar.params import QueryParameter

from billing_gateway.billing.wire import EventPage

from .auth import need, visible
from .common import QueryId, Store, Who

__all__ = ["HANDLERS"]


@get("/events", sync_to_thread=True)
def list_events(
    store: Store,
    who: Who,
    customer_id: QueryId = None,
    after: Annotated[int, QueryParameter(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
) -> EventPage:
    """The outbox history (event envelopes), oldest first, paged by ``after``."""
    need(who, "billing:events:read")
    if who.customer_id is not None:
        visible(who, customer_id or who.customer_id, f"customer {customer_id}")
        customer_id = who.customer_id
    page = store.list_events(customer_id, after, limit)
    return EventPage([msgspec.json.decode(p) for _, p in page], page[-1][0] if page else after)


@get("/budgets", sync_to_thread=True)
def budgets(store: Store, who: Who) -> list[dict[str, Any]]:
    """Each customer's current subscription (canceled ones too) as a ``subscription.created``
    event and, for a key bound to no customer, every routing policy and tombstone as its
    ``routing_policy.*`` event: what a gateway applies to rebuild its tables after a gap."""
    need(who, "billing:events:read")
    state = store.budget_events(who.customer_id)
    if who.customer_id is None:
        state += store.routing_events()
    return [msgspec.json.decode(e) for e in state]


HANDLERS = [list_events, budgets]
