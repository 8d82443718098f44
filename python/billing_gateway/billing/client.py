"""Typed clients of the Billing API: ``AsyncBillingClient`` and its sync facade ``BillingClient``.

Every POST, PUT and DELETE carries an ``Idempotency-Key`` (generated unless given), so connection
errors and 5xx answers are retried with exponential backoff without ever doing a
thing twice. A 4xx answer raises the matching :class:`ApiError` subclass.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx
import msgspec

from billing_gateway.errors import BillingGatewayError
from billing_gateway.models import Target
from billing_gateway.money import from_micros

from .wire import (
    Customer,
    EventPage,
    Invoice,
    Plan,
    RoutingPolicy,
    RoutingPolicyDeleted,
    RoutingTargetIn,
    Subscription,
    UsageRecordOut,
)

__all__ = [
    "ApiError",
    "AsyncBillingClient",
    "BadRequest",
    "BillingClient",
    "Conflict",
    "Forbidden",
    "NotFound",
    "Unauthorized",
    "Unprocessable",
]

T = TypeVar("T")


class ApiError(BillingGatewayError):
    """An error answer from the Billing API."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class Unprocessable(ApiError):
    pass


_ERRORS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Unprocessable,
}


@dataclass(frozen=True)
class _Call:
    """One API request, and how to read its answer."""

    method: str
    path: str
    result: Any
    json: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Idempotency-Key": self.idempotency_key} if self.idempotency_key else {}

    def read(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                detail = str(response.json().get("detail", response.text))
            except ValueError:
                detail = response.text
            raise _ERRORS.get(response.status_code, ApiError)(response.status_code, detail)
        return msgspec.json.decode(response.content, type=self.result)


def _money(value: Decimal | int | str | None) -> str | None:
    return None if value is None else str(value)


def _post(path: str, result: Any, body: dict[str, Any], key: str | None, method: str = "POST") -> _Call:
    clean = {k: v for k, v in body.items() if v is not None}
    return _Call(method, path, result, json=clean, idempotency_key=key or uuid.uuid4().hex)


Targets = Sequence[Target | RoutingTargetIn | Mapping[str, Any]]
"""A policy's targets: the SDK's ``Target`` (``cost`` in micro-units, sent exactly as a
decimal), or ``RoutingTargetIn`` structs or mappings of the API's fields (``cost`` a
decimal amount per unit of work, like every amount of the API)."""


def _policy_body(priority: int, match_expression: str, strategy: str, targets: Targets) -> dict[str, Any]:
    def target(t: Target | RoutingTargetIn | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(t, Target):
            return {"name": t.name, "weight": t.weight, "cost": str(from_micros(t.cost))}
        fields = msgspec.structs.asdict(t) if isinstance(t, RoutingTargetIn) else dict(t)
        return {k: _money(v) if k == "cost" else v for k, v in fields.items()}

    return {
        "priority": priority,
        "match_expression": match_expression,
        "strategy": strategy,
        "targets": [target(t) for t in targets],
    }


class _Calls:
    """The API's operations as requests; the clients below only send them."""

    @staticmethod
    def create_customer(name: str, email: str, stripe_customer_id: str | None, key: str | None) -> _Call:
        body = {"name": name, "email": email, "stripe_customer_id": stripe_customer_id}
        return _post("/customers", Customer, body, key)

    @staticmethod
    def create_plan(body: dict[str, Any], key: str | None) -> _Call:
        return _post("/plans", Plan, body, key)

    @staticmethod
    def create_subscription(
        customer_id: str, plan_id: str, total_budget: Any, trial_days: int, key: str | None
    ) -> _Call:
        body = {
            "customer_id": customer_id,
            "plan_id": plan_id,
            "total_budget": _money(total_budget),
            "trial_days": trial_days,
        }
        return _post("/subscriptions", Subscription, body, key)

    @staticmethod
    def update_subscription(
        subscription_id: str, plan_id: str | None, total_budget: Any, status: str | None
    ) -> _Call:
        body = {"plan_id": plan_id, "total_budget": _money(total_budget), "status": status}
        clean = {k: v for k, v in body.items() if v is not None}
        return _Call("PATCH", f"/subscriptions/{subscription_id}", Subscription, json=clean)

    @staticmethod
    def record_usage(subscription_id: str, amount: Any, key: str) -> _Call:
        body = {"subscription_id": subscription_id, "amount": _money(amount), "idempotency_key": key}
        return _post("/usage-records", UsageRecordOut, body, key)

    @staticmethod
    def list_invoices(customer_id: str | None) -> _Call:
        params = {"customer_id": customer_id} if customer_id else {}
        return _Call("GET", "/invoices", list[Invoice], params=params)

    @staticmethod
    def create_routing_policy(policy_id: str | None, body: dict[str, Any], key: str | None) -> _Call:
        return _post("/routing-policies", RoutingPolicy, {**body, "id": policy_id}, key)

    @staticmethod
    def replace_routing_policy(policy_id: str, body: dict[str, Any], key: str | None) -> _Call:
        return _post(f"/routing-policies/{policy_id}", RoutingPolicy, body, key, method="PUT")

    @staticmethod
    def delete_routing_policy(policy_id: str, key: str | None) -> _Call:
        path = f"/routing-policies/{policy_id}"
        return _Call("DELETE", path, RoutingPolicyDeleted, idempotency_key=key or uuid.uuid4().hex)

    @staticmethod
    def events(customer_id: str | None, after: int, limit: int) -> _Call:
        params: dict[str, Any] = {"after": after, "limit": limit}
        if customer_id:
            params["customer_id"] = customer_id
        return _Call("GET", "/events", EventPage, params=params)


API_PREFIX = "/api/v1"


class _Base:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.1,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix(API_PREFIX) + API_PREFIX
        """The API's root: the server's origin (``http://host:port``) with or without
        ``/api/v1`` (and a trailing ``/``) works the same."""
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s

    def _retryable(self, attempt: int, response: httpx.Response | None) -> bool:
        return attempt < self.retries and (response is None or response.status_code >= 500)

    def _delay(self, attempt: int) -> float:
        return float(self.backoff_s * 2**attempt)


class AsyncBillingClient(_Base):
    """The Billing API, for asyncio. Use as an async context manager, or ``await aclose()``."""

    def __init__(self, base_url: str, api_key: str, **options: Any) -> None:
        super().__init__(base_url, api_key, **options)
        self._http = httpx.AsyncClient(timeout=self.timeout, headers=self.headers)

    async def _send(self, call: _Call) -> Any:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = await self._http.request(
                    call.method,
                    self.base_url + call.path,
                    json=call.json,
                    params=call.params,
                    headers=call.headers(),
                )
            except httpx.TransportError:
                if not self._retryable(attempt, None):
                    raise
            if response is not None and not self._retryable(attempt, response):
                return call.read(response)
            await asyncio.sleep(self._delay(attempt))
            attempt += 1

    async def create_customer(
        self,
        name: str,
        email: str,
        stripe_customer_id: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Customer:
        result: Customer = await self._send(
            _Calls.create_customer(name, email, stripe_customer_id, idempotency_key)
        )
        return result

    async def get_customer(self, customer_id: str) -> Customer:
        result: Customer = await self._send(_Call("GET", f"/customers/{customer_id}", Customer))
        return result

    async def list_plans(self) -> list[Plan]:
        result: list[Plan] = await self._send(_Call("GET", "/plans", list[Plan]))
        return result

    async def create_plan(self, /, *, idempotency_key: str | None = None, **fields: Any) -> Plan:
        body = {k: _money(v) if k in ("included_budget", "price") else v for k, v in fields.items()}
        result: Plan = await self._send(_Calls.create_plan(body, idempotency_key))
        return result

    async def get_subscription(self, subscription_id: str) -> Subscription:
        result: Subscription = await self._send(
            _Call("GET", f"/subscriptions/{subscription_id}", Subscription)
        )
        return result

    async def cancel_subscription(self, subscription_id: str) -> Subscription:
        return await self.update_subscription(subscription_id, status="canceled")

    async def pay_invoice(self, invoice_id: str, *, idempotency_key: str | None = None) -> Invoice:
        result: Invoice = await self._send(_post(f"/invoices/{invoice_id}/pay", Invoice, {}, idempotency_key))
        return result

    async def fail_payment(self, invoice_id: str, *, idempotency_key: str | None = None) -> Invoice:
        result: Invoice = await self._send(
            _post(f"/invoices/{invoice_id}/payment-failed", Invoice, {}, idempotency_key)
        )
        return result

    async def void_invoice(self, invoice_id: str, *, idempotency_key: str | None = None) -> Invoice:
        result: Invoice = await self._send(
            _post(f"/invoices/{invoice_id}/void", Invoice, {}, idempotency_key)
        )
        return result

    async def budget_events(self) -> list[bytes]:
        docs: list[dict[str, Any]] = await self._send(_Call("GET", "/budgets", list[dict[str, Any]]))
        return [msgspec.json.encode(d) for d in docs]

    async def create_subscription(
        self,
        customer_id: str,
        plan_id: str,
        *,
        total_budget: Decimal | int | str | None = None,
        trial_days: int = 0,
        idempotency_key: str | None = None,
    ) -> Subscription:
        call = _Calls.create_subscription(customer_id, plan_id, total_budget, trial_days, idempotency_key)
        result: Subscription = await self._send(call)
        return result

    async def update_subscription(
        self,
        subscription_id: str,
        *,
        plan_id: str | None = None,
        total_budget: Decimal | int | str | None = None,
        status: str | None = None,
    ) -> Subscription:
        call = _Calls.update_subscription(subscription_id, plan_id, total_budget, status)
        result: Subscription = await self._send(call)
        return result

    async def record_usage(
        self, subscription_id: str, amount: Decimal | int | str, idempotency_key: str
    ) -> UsageRecordOut:
        result: UsageRecordOut = await self._send(
            _Calls.record_usage(subscription_id, amount, idempotency_key)
        )
        return result

    async def list_invoices(self, customer_id: str | None = None) -> list[Invoice]:
        result: list[Invoice] = await self._send(_Calls.list_invoices(customer_id))
        return result

    async def events(self, customer_id: str | None = None, after: int = 0, limit: int = 100) -> EventPage:
        result: EventPage = await self._send(_Calls.events(customer_id, after, limit))
        return result

    async def list_routing_policies(self) -> list[RoutingPolicy]:
        """Every routing policy, in the order a gateway tries them."""
        result: list[RoutingPolicy] = await self._send(_Call("GET", "/routing-policies", list[RoutingPolicy]))
        return result

    async def get_routing_policy(self, policy_id: str) -> RoutingPolicy:
        result: RoutingPolicy = await self._send(
            _Call("GET", f"/routing-policies/{policy_id}", RoutingPolicy)
        )
        return result

    async def create_routing_policy(
        self,
        *,
        priority: int,
        match_expression: str,
        strategy: str,
        targets: Targets,
        id: str | None = None,
        idempotency_key: str | None = None,
    ) -> RoutingPolicy:
        """A new policy (:class:`Conflict` if its id is taken); :class:`Unprocessable` naming
        the problem when a gateway would not compile it."""
        body = _policy_body(priority, match_expression, strategy, targets)
        result: RoutingPolicy = await self._send(_Calls.create_routing_policy(id, body, idempotency_key))
        return result

    async def replace_routing_policy(
        self,
        policy_id: str,
        *,
        priority: int,
        match_expression: str,
        strategy: str,
        targets: Targets,
        idempotency_key: str | None = None,
    ) -> RoutingPolicy:
        """The policy with this id, created or replaced whole."""
        body = _policy_body(priority, match_expression, strategy, targets)
        call = _Calls.replace_routing_policy(policy_id, body, idempotency_key)
        result: RoutingPolicy = await self._send(call)
        return result

    async def delete_routing_policy(
        self, policy_id: str, *, idempotency_key: str | None = None
    ) -> RoutingPolicyDeleted:
        result: RoutingPolicyDeleted = await self._send(
            _Calls.delete_routing_policy(policy_id, idempotency_key)
        )
        return result

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncBillingClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


P = ParamSpec("P")
R = TypeVar("R")


def _blocking(
    method: Callable[Concatenate[AsyncBillingClient, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[BillingClient, P], R]:
    """The sync twin of an ``AsyncBillingClient`` method (same signature, same docs)."""

    def call(self: BillingClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return asyncio.run_coroutine_threadsafe(method(self._client, *args, **kwargs), self._loop).result()

    functools.update_wrapper(call, method)
    return call


class BillingClient:
    """The Billing API, synchronously: the async client run on a private event loop thread,
    so it works from plain threads and from inside another event loop alike. Use as a
    context manager, or call ``close()``."""

    def __init__(self, base_url: str, api_key: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="billing-client", daemon=True)
        self._thread.start()
        self._client = AsyncBillingClient(base_url, api_key, **options)

    create_customer = _blocking(AsyncBillingClient.create_customer)
    get_customer = _blocking(AsyncBillingClient.get_customer)
    list_plans = _blocking(AsyncBillingClient.list_plans)
    create_plan = _blocking(AsyncBillingClient.create_plan)
    create_subscription = _blocking(AsyncBillingClient.create_subscription)
    get_subscription = _blocking(AsyncBillingClient.get_subscription)
    update_subscription = _blocking(AsyncBillingClient.update_subscription)
    cancel_subscription = _blocking(AsyncBillingClient.cancel_subscription)
    record_usage = _blocking(AsyncBillingClient.record_usage)
    list_invoices = _blocking(AsyncBillingClient.list_invoices)
    pay_invoice = _blocking(AsyncBillingClient.pay_invoice)
    fail_payment = _blocking(AsyncBillingClient.fail_payment)
    void_invoice = _blocking(AsyncBillingClient.void_invoice)
    events = _blocking(AsyncBillingClient.events)
    budget_events = _blocking(AsyncBillingClient.budget_events)
    list_routing_policies = _blocking(AsyncBillingClient.list_routing_policies)
    get_routing_policy = _blocking(AsyncBillingClient.get_routing_policy)
    create_routing_policy = _blocking(AsyncBillingClient.create_routing_policy)
    replace_routing_policy = _blocking(AsyncBillingClient.replace_routing_policy)
    delete_routing_policy = _blocking(AsyncBillingClient.delete_routing_policy)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> BillingClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
