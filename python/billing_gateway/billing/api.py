"""The Billing REST API (ASGI, Litestar) under ``/api/v1``; OpenAPI at ``/openapi.json``.

Every request carries ``Authorization: Bearer <key>``. A key has scopes
(``billing:customers:create``, ...; ``billing:*`` grants all) and may be bound to one
customer, in which case other customers' objects do not exist for it (404, not 403).
Every POST honours ``Idempotency-Key`` (1 to 255 visible ASCII characters): the same
key with the same body replays the first response; with another body it is a 409. The
operation, its outbox event and the recorded answer commit together (see
:mod:`.idempotency`). Customer-bound keys cannot create shared objects (plans).

Malformed input is a 4xx JSON error naming the problem, never a 500: bodies are at most
64 KiB of UTF-8 JSON, nested at most as deep as the decoder allows; ids in paths and
queries must look like ids. An unreachable database is a 503 with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, TypeVar

import msgspec
import sqlalchemy as sa
from litestar import Litestar, Request, Response, Router, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.enums import MediaType
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    SerializationException,
    ValidationException,
)
from litestar.openapi import OpenAPIConfig
from litestar.params import JSONBody, PathParameter, QueryParameter

from billing_gateway.errors import InvalidAmount
from billing_gateway.money import from_micros, to_micros

from .domain import BillingError, NotFound
from .idempotency import Claim, run_once
from .store import BillingStore, InvoiceRow, PlanRow, Principal, SubscriptionRow
from .wire import (
    ID_PATTERN,
    MAX_ID,
    Customer,
    CustomerIn,
    EventPage,
    Invoice,
    InvoiceLine,
    Key,
    Plan,
    PlanIn,
    Subscription,
    SubscriptionIn,
    SubscriptionPatch,
    UsageIn,
    UsageRecordOut,
)

__all__ = ["SCOPES", "create_app"]

log = logging.getLogger(__name__)
Req = Request[Any, Any, Any]
S = TypeVar("S", bound=msgspec.Struct)
Who = NamedDependency[Principal]  # the caller, from the Authorization header
PathId = Annotated[str, PathParameter(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN)]
QueryId = Annotated[str | None, QueryParameter(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN)]
MAX_BODY = 64 * 1024

SCOPES = (
    "billing:customers:create",
    "billing:customers:read",
    "billing:subscriptions:create",
    "billing:subscriptions:read",
    "billing:subscriptions:update",
    "billing:usage:create",
    "billing:plans:read",
    "billing:plans:write",
    "billing:invoices:read",
    "billing:invoices:write",
    "billing:events:read",
)

# ---- conversions --------------------------------------------------------------------------------


def _micros(value: str | int | None, field: str) -> int | None:
    """Exact micro-units (the store checks the bounds)."""
    if value is None:
        return None
    try:
        return to_micros(value)
    except InvalidAmount as exc:
        raise HTTPException(status_code=422, detail=f"{field}: {exc}") from None


def _out(kind: type[S], row: msgspec.Struct, **money: int) -> S:
    """A response struct from a row: its own fields only, money as decimals."""
    fields = {k: getattr(row, k) for k in kind.__struct_fields__ if hasattr(row, k)}
    built: S = kind(**fields | {k: from_micros(v) for k, v in money.items()})
    return built


def _plan(p: PlanRow) -> Plan:
    return _out(Plan, p, included_budget=p.included_budget, price=p.price)


def _subscription(s: SubscriptionRow) -> Subscription:
    return _out(Subscription, s, total_budget=s.total_budget)


def _invoice(i: InvoiceRow) -> Invoice:
    lines = [_out(InvoiceLine, x, amount=x.amount) for x in i.lines]
    built: Invoice = _out(Invoice, msgspec.structs.replace(i, lines=()), total=i.total)
    built.lines = lines
    return built


# ---- auth and idempotency ---------------------------------------------------------------------------


def _need(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes and "billing:*" not in principal.scopes:
        raise PermissionDeniedException(detail=f"this key lacks the scope {scope}")


def _visible(principal: Principal, customer_id: str, what: str) -> None:
    """A customer-bound key sees only its customer's objects: others are 404."""
    if principal.customer_id is not None and principal.customer_id != customer_id:
        raise NotFound(f"{what} not found")


def _unbound(principal: Principal, action: str) -> None:
    """Objects every customer shares are not a customer-bound key's to create or change."""
    if principal.customer_id is not None:
        raise PermissionDeniedException(detail=f"a customer-bound key cannot {action}")


def _idempotency_key(request: Req) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    try:
        return msgspec.convert(key, Key)
    except msgspec.ValidationError:
        raise HTTPException(
            status_code=422, detail="Idempotency-Key: must be 1 to 255 visible ASCII characters"
        ) from None


_body = msgspec.json.Decoder(float_hook=Decimal)
"""Request bodies: numbers with a fraction become exact Decimals, never binary floats."""


class _Request(Request[Any, Any, Any]):
    """A request whose JSON body is decoded without floats, and refused (400, naming the
    problem) when it is not JSON, not UTF-8 or nested deeper than the decoder can go."""

    async def json(self) -> Any:
        body = await self.body()
        try:
            return _body.decode(body or b"null")
        except msgspec.DecodeError as exc:
            raise SerializationException(f"body: {exc}") from None
        except RecursionError:
            raise SerializationException("body: JSON nested too deeply") from None
        except UnicodeDecodeError as exc:
            raise SerializationException(f"body: not UTF-8 ({exc.reason} at byte {exc.start})") from None


def create_app(store: BillingStore) -> Litestar:
    async def principal(request: Req) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret:
            raise NotAuthorizedException(detail="missing Authorization: Bearer <key>")
        found = store.authenticate(secret.strip())
        if found is None:
            raise NotAuthorizedException(detail="unknown API key")
        return found

    async def idempotent(
        request: Req, who: Who, status: int, run: Callable[[str | None], msgspec.Struct]
    ) -> Response[Any]:
        """Runs a POST once per ``Idempotency-Key``; replays or refuses repeats. ``run`` gets
        the key (the events' correlation id)."""
        key = _idempotency_key(request)
        if key is None:
            return Response(run(None), status_code=status)
        digest = hashlib.sha256(
            request.method.encode() + request.url.path.encode() + await request.body()
        ).hexdigest()
        answer = run_once(
            store, Claim(who.key_id, key, digest), status, lambda: msgspec.json.encode(run(key))
        )
        return Response(answer.body, status_code=answer.status_code, media_type=MediaType.JSON)

    # ---- customers -------------------------------------------------------------------------------

    @post("/customers", status_code=201)
    async def create_customer(request: Req, who: Who, data: JSONBody[CustomerIn]) -> Response[Customer]:
        _need(who, "billing:customers:create")
        _unbound(who, "create customers")
        return await idempotent(
            request, who, 201,
            lambda key: _out(
                Customer, store.create_customer(data.name, data.email, data.stripe_customer_id, key)
            ),
        )  # fmt: skip

    @get("/customers/{customer_id:str}")
    async def get_customer(who: Who, customer_id: PathId) -> Customer:
        _need(who, "billing:customers:read")
        _visible(who, customer_id, f"customer {customer_id}")
        found = store.get_customer(customer_id)
        if found is None:
            raise NotFound(f"customer {customer_id} not found")
        return _out(Customer, found)

    # ---- plans ---------------------------------------------------------------------------------------

    @get("/plans")
    async def list_plans(who: Who) -> list[Plan]:
        _need(who, "billing:plans:read")
        return [_plan(p) for p in store.list_plans()]

    @post("/plans", status_code=201)
    async def create_plan(request: Req, who: Who, data: JSONBody[PlanIn]) -> Response[Plan]:
        _need(who, "billing:plans:write")
        _unbound(who, "create plans: plans are shared by every customer")
        budget, price = _micros(data.included_budget, "included_budget"), _micros(data.price, "price")
        assert budget is not None and price is not None
        return await idempotent(
            request, who, 201,
            lambda _: _plan(store.create_plan(
                name=data.name, currency=data.currency, included_budget=budget, price=price,
                interval_days=data.interval_days, product_name=data.product_name, plan_id=data.id,
            )),
        )  # fmt: skip

    # ---- subscriptions ----------------------------------------------------------------------------------

    @post("/subscriptions", status_code=201)
    async def create_subscription(
        request: Req, who: Who, data: JSONBody[SubscriptionIn]
    ) -> Response[Subscription]:
        _need(who, "billing:subscriptions:create")
        _visible(who, data.customer_id, f"customer {data.customer_id}")
        budget = _micros(data.total_budget, "total_budget")
        return await idempotent(
            request, who, 201,
            lambda key: _subscription(store.create_subscription(
                data.customer_id, data.plan_id, total_budget=budget, trial_days=data.trial_days,
                correlation_id=key,
            )),
        )  # fmt: skip

    def _owned_subscription(who: Principal, subscription_id: str) -> SubscriptionRow:
        found = store.get_subscription(subscription_id)
        if found is None:
            raise NotFound(f"subscription {subscription_id} not found")
        _visible(who, found.customer_id, f"subscription {subscription_id}")
        return found

    @get("/subscriptions/{subscription_id:str}")
    async def get_subscription(who: Who, subscription_id: PathId) -> Subscription:
        _need(who, "billing:subscriptions:read")
        return _subscription(_owned_subscription(who, subscription_id))

    @patch("/subscriptions/{subscription_id:str}")
    async def update_subscription(
        who: Who, subscription_id: PathId, data: JSONBody[SubscriptionPatch]
    ) -> Subscription:
        """A plan, budget or status change; a canceled subscription refuses them all (409)."""
        _need(who, "billing:subscriptions:update")
        _owned_subscription(who, subscription_id)
        updated = store.update_subscription(
            subscription_id,
            plan_id=data.plan_id,
            total_budget=_micros(data.total_budget, "total_budget"),
            status=data.status,
        )
        return _subscription(updated)

    # ---- usage ------------------------------------------------------------------------------------------

    @post("/usage-records", status_code=201)
    async def create_usage(request: Req, who: Who, data: JSONBody[UsageIn]) -> Response[UsageRecordOut]:
        _need(who, "billing:usage:create")
        _owned_subscription(who, data.subscription_id)
        amount = _micros(data.amount, "amount")
        assert amount is not None
        key = data.idempotency_key or _idempotency_key(request)
        if key is None:
            raise HTTPException(
                status_code=422, detail="idempotency_key: required (or an Idempotency-Key header)"
            )
        record, created = store.record_usage(data.subscription_id, amount, key)
        out = _out(UsageRecordOut, record, amount=record.amount)
        return Response(out, status_code=201 if created else 200)

    # ---- invoices ---------------------------------------------------------------------------------------

    @get("/invoices")
    async def list_invoices(who: Who, customer_id: QueryId = None) -> list[Invoice]:
        _need(who, "billing:invoices:read")
        if who.customer_id is not None:
            _visible(who, customer_id or who.customer_id, f"customer {customer_id}")
            customer_id = who.customer_id
        return [_invoice(i) for i in store.list_invoices(customer_id)]

    @post("/invoices/{invoice_id:str}/pay", status_code=200)
    async def pay_invoice(request: Req, who: Who, invoice_id: PathId) -> Response[Invoice]:
        """Records the payment and opens the next period. The last invoice of a canceled
        subscription can still be paid; that never revives the subscription."""
        _need(who, "billing:invoices:write")
        _owned_invoice(who, invoice_id)
        return await idempotent(request, who, 200, lambda key: _invoice(store.pay_invoice(invoice_id, key)))

    def _owned_invoice(who: Principal, invoice_id: str) -> None:
        found = store.find_invoice(invoice_id)
        if found is None:
            raise NotFound(f"invoice {invoice_id} not found")
        _visible(who, found.customer_id, f"invoice {invoice_id}")

    @post("/invoices/{invoice_id:str}/payment-failed", status_code=200)
    async def payment_failed(request: Req, who: Who, invoice_id: PathId) -> Response[Invoice]:
        """Records a failed payment attempt: the subscription becomes past_due (409 when it
        is canceled)."""
        _need(who, "billing:invoices:write")
        _owned_invoice(who, invoice_id)
        return await idempotent(request, who, 200, lambda key: _invoice(store.fail_payment(invoice_id, key)))

    @post("/invoices/{invoice_id:str}/void", status_code=200)
    async def void_invoice(request: Req, who: Who, invoice_id: PathId) -> Response[Invoice]:
        _need(who, "billing:invoices:write")
        _owned_invoice(who, invoice_id)
        return await idempotent(request, who, 200, lambda _: _invoice(store.void_invoice(invoice_id)))

    # ---- events ---------------------------------------------------------------------------------

    @get("/events")
    async def list_events(
        who: Who,
        customer_id: QueryId = None,
        after: Annotated[int, QueryParameter(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> EventPage:
        """The outbox history (event envelopes), oldest first, paged by ``after``."""
        _need(who, "billing:events:read")
        if who.customer_id is not None:
            _visible(who, customer_id or who.customer_id, f"customer {customer_id}")
            customer_id = who.customer_id
        page = store.list_events(customer_id, after, limit)
        return EventPage([msgspec.json.decode(p) for _, p in page], page[-1][0] if page else after)

    @get("/budgets")
    async def budgets(who: Who) -> list[dict[str, Any]]:
        """Each customer's current subscription (canceled ones too) as a ``subscription.created``
        event, which a gateway applies to rebuild its table after a gap."""
        _need(who, "billing:events:read")
        return [msgspec.json.decode(e) for e in store.budget_events(who.customer_id)]

    @get("/metrics", include_in_schema=False, media_type="text/plain; version=0.0.4")
    async def metrics() -> str:
        """Prometheus text: outbox rows by status and the oldest pending row's age."""
        state = store.outbox_state()
        lines = ["# TYPE billing_outbox_events gauge"]
        for status in ("pending", "published", "dead"):
            lines.append(f'billing_outbox_events{{status="{status}"}} {state.counts.get(status, 0)}')
        lines += ["# TYPE billing_outbox_oldest_pending_seconds gauge"]
        lines.append(f"billing_outbox_oldest_pending_seconds {state.oldest_pending_s:.3f}")
        return "\n".join(lines) + "\n"

    def billing_error(_: Req, exc: BillingError) -> Response[dict[str, Any]]:
        return Response({"status_code": exc.status_code, "detail": str(exc)}, status_code=exc.status_code)

    def database_unavailable(request: Req, exc: sa.exc.DBAPIError) -> Response[dict[str, Any]]:
        """The database is unreachable, or gave up on a lock: nothing was done; retry (with
        the same Idempotency-Key)."""
        log.warning("database unavailable for %s %s: %s", request.method, request.url.path, exc.orig)
        body = {"status_code": 503, "detail": "database unavailable; retry shortly"}
        return Response(body, status_code=503, headers={"Retry-After": "1"})

    def invalid_body(_: Req, exc: ValidationException) -> Response[dict[str, Any]]:
        """A body that parses but breaks the schema is 422, naming the fields (bad JSON is a 400)."""
        problems = exc.extra if isinstance(exc.extra, list) else []
        fields = "; ".join(
            f"{p.get('key', '?')}: {p.get('message', '')}" for p in problems if isinstance(p, dict)
        )
        return Response(
            {"status_code": 422, "detail": fields or exc.detail, "extra": problems}, status_code=422
        )

    api = Router(
        path="/api/v1",
        route_handlers=[
            create_customer, get_customer, list_plans, create_plan, create_subscription, get_subscription,
            update_subscription, create_usage, list_invoices, pay_invoice, payment_failed, void_invoice,
            list_events, budgets,
        ],
        dependencies={"who": Provide(principal)},
    )  # fmt: skip
    return Litestar(
        route_handlers=[api, metrics],
        exception_handlers={
            BillingError: billing_error,
            ValidationException: invalid_body,
            sa.exc.OperationalError: database_unavailable,
            sa.exc.InterfaceError: database_unavailable,
        },
        openapi_config=OpenAPIConfig(title="billing_gateway Billing API", version="1.0.0", path="/"),
        request_class=_Request,
        request_max_body_size=MAX_BODY,
        debug=False,
    )
