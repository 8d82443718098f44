"""What the resources' handlers share: parameter types, conversions from the store's rows to
the wire, and running a POST once per ``Idempotency-Key``."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.di import NamedDependency
from litestar.enums import MediaType
from litestar.exceptions import HTTPException
from litestar.params import PathParameter, QueryParameter

from billing_gateway.billing.idempotency import Claim, run_once
from billing_gateway.billing.store import BillingStore, InvoiceRow, PlanRow, Principal, SubscriptionRow
from billing_gateway.billing.wire import ID_PATTERN, MAX_ID, Invoice, InvoiceLine, Key, Plan, Subscription
from billing_gateway.errors import InvalidAmount
from billing_gateway.money import from_micros, to_micros

__all__ = [
    "PathId",
    "QueryId",
    "Req",
    "Store",
    "Who",
    "idempotency_key",
    "idempotent",
    "invoice_out",
    "micros",
    "out",
    "plan_out",
    "stripe_key",
    "subscription_out",
]

Req = Request[Any, Any, Any]
S = TypeVar("S", bound=msgspec.Struct)
Who = NamedDependency[Principal]
"""The caller, from the Authorization header."""
Store = NamedDependency[BillingStore]
PathId = Annotated[str, PathParameter(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN)]
QueryId = Annotated[str | None, QueryParameter(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN)]


def micros(value: str | int | None, field: str) -> int | None:
    """Exact micro-units (the store checks the bounds)."""
    if value is None:
        return None
    try:
        return to_micros(value)
    except InvalidAmount as exc:
        raise HTTPException(status_code=422, detail=f"{field}: {exc}") from None


def out(kind: type[S], row: msgspec.Struct, **money: int) -> S:
    """A response struct from a row: its own fields only, money as decimals."""
    fields = {k: getattr(row, k) for k in kind.__struct_fields__ if hasattr(row, k)}
    built: S = kind(**fields | {k: from_micros(v) for k, v in money.items()})
    return built


def plan_out(p: PlanRow) -> Plan:
    return out(Plan, p, included_budget=p.included_budget, price=p.price)


def subscription_out(s: SubscriptionRow) -> Subscription:
    return out(Subscription, s, total_budget=s.total_budget)


def invoice_out(i: InvoiceRow) -> Invoice:
    built = out(Invoice, msgspec.structs.replace(i, lines=()), total=i.total)
    built.lines = [out(InvoiceLine, x, amount=x.amount) for x in i.lines]
    return built


def idempotency_key(request: Req) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    try:
        return msgspec.convert(key, Key)
    except msgspec.ValidationError:
        raise HTTPException(
            status_code=422, detail="Idempotency-Key: must be 1 to 255 visible ASCII characters"
        ) from None


def idempotent(
    store: BillingStore,
    request: Req,
    body: bytes,
    who: Principal,
    status: int,
    run: Callable[[str | None], msgspec.Struct],
) -> Response[Any]:
    """Runs a POST once per ``Idempotency-Key``; replays or refuses repeats. ``run`` gets the
    key (the events' correlation id)."""
    key = idempotency_key(request)
    if key is None:
        return Response(run(None), status_code=status)
    digest = hashlib.sha256(request.method.encode() + request.url.path.encode() + body).hexdigest()
    answer = run_once(store, Claim(who.key_id, key, digest), status, lambda: msgspec.json.encode(run(key)))
    return Response(answer.body, status_code=answer.status_code, media_type=MediaType.JSON)


def stripe_key(request: Req, who: Principal, operation: str) -> str:
    """The idempotency key passed to Stripe: from the request's ``Idempotency-Key`` (the same
    request retried is the same Stripe call), else a new one."""
    key = request.headers.get("idempotency-key")
    return f"bg-{who.key_id}-{operation}-{key}" if key else f"bg-{operation}-{uuid.uuid4().hex}"
