"""``BudgetMiddleware``: budget admission for any ASGI app (Starlette, FastAPI, Litestar).

Pure ASGI (not Starlette's ``BaseHTTPMiddleware``, which buffers streaming responses)::

    app = BudgetMiddleware(app, gateway, tenant=lambda scope: ..., cost=lambda scope: 1_000)

For each HTTP request: ``tenant(scope)`` names the tenant (``None`` answers 401);
``cost(scope)`` is the hold, in micro-units, reserved before the app runs (402 when the
budget cannot cover it, 403 when the subscription is inactive or its period ended; the
app is not called). The hold is committed when the response is complete — its last body
message sent, streaming included — and released when the app raises, answers 5xx, or the
client disconnects first. The app may charge less than the hold: it finds the
:class:`AdmittedRequest` at ``scope["billing_gateway"]`` and sets its ``actual``.
Responses carry ``x-budget-remaining`` (decimal units, after the hold). Other scopes
(``lifespan``, ``websocket``) pass through untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import msgspec

from .errors import UnknownReservation
from .gateway import Gateway
from .models import Reason
from .money import micros_text

__all__ = ["AdmittedRequest", "BudgetMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY = "billing_gateway"
_json = msgspec.json.Encoder()


@dataclass
class AdmittedRequest:
    """What the middleware reserved for a request; set ``actual`` (micro-units, at most
    ``hold``) to charge less than the hold."""

    tenant_id: str
    hold: int
    reservation_id: int
    actual: int | None = None


class _Settlement:
    """Settles one hold exactly once."""

    def __init__(self, gateway: Gateway, admitted: AdmittedRequest) -> None:
        self.gateway = gateway
        self.admitted = admitted
        self.done = False

    def commit(self) -> None:
        if self.done:
            return
        self.done = True
        a = self.admitted
        actual = a.hold if a.actual is None else min(max(a.actual, 0), a.hold)
        with contextlib.suppress(UnknownReservation):  # expired before the response completed
            self.gateway.commit(a.reservation_id, actual)

    def release(self) -> None:
        if self.done:
            return
        self.done = True
        with contextlib.suppress(UnknownReservation):
            self.gateway.release(self.admitted.reservation_id)


class BudgetMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        gateway: Gateway,
        *,
        tenant: Callable[[Scope], str | None],
        cost: Callable[[Scope], int],
        ttl_s: float = 60.0,
    ) -> None:
        """``ttl_s``: the hold's lifetime, longer than any response may take to complete."""
        self.app = app
        self.gateway = gateway
        self.tenant = tenant
        self.cost = cost
        self.ttl_s = ttl_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tenant_id = self.tenant(scope)
        if tenant_id is None:
            await _refuse(send, 401, "missing or unknown API key", "invalid_api_key", None)
            return
        amount = self.cost(scope)
        decision = self.gateway.reserve(tenant_id, amount, ttl_s=self.ttl_s)
        if not decision.allowed or decision.reservation_id is None:
            status = 403 if decision.reason in (Reason.INACTIVE, Reason.PERIOD_ENDED) else 402
            message = f"budget refused for tenant {tenant_id!r}: {decision.reason.value}"
            await _refuse(send, status, message, decision.reason.value, decision.remaining)
            return
        admitted = AdmittedRequest(tenant_id, amount, decision.reservation_id)
        scope[SCOPE_KEY] = admitted
        settle = _Settlement(self.gateway, admitted)
        remaining = _header(decision.remaining)
        status = 0

        async def receive_watching() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                settle.release()
            return message

        async def send_settling(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-budget-remaining", remaining)]
            try:
                await send(message)
            except BaseException:
                settle.release()  # the client is gone
                raise
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                if status >= 500:
                    settle.release()
                else:
                    settle.commit()

        try:
            await self.app(scope, receive_watching, send_settling)
        finally:
            settle.release()  # a no-op once committed


def _header(micros: int) -> bytes:
    return micros_text(max(micros, 0)).encode()


async def _refuse(send: Send, status: int, message: str, code: str, remaining: int | None) -> None:
    body = _json.encode({"error": {"message": message, "type": "budget_error", "code": code}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if remaining is not None:
        headers.append((b"x-budget-remaining", _header(remaining)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
