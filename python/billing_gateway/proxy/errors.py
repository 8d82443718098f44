"""Errors in OpenAI's shape, so that SDKs raise their usual exceptions
(``AuthenticationError`` for 401, ``PermissionDeniedError`` for 403, …)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import msgspec
from aiohttp import web

from billing_gateway.models import Reason
from billing_gateway.money import micros_text

__all__ = ["error_body", "openai_error", "refusal", "unrouted"]

_json = msgspec.json.Encoder()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_error",
}


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> bytes:
    error = {"message": message, "type": _TYPES.get(status, "api_error"), "param": param, "code": code}
    return _json.encode({"error": error})


@web.middleware
async def unrouted(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A path or a method that nothing serves answers in OpenAI's shape too (404, 405)."""
    missing = request.match_info.http_exception
    if missing is None:
        return await handler(request)
    allowed = missing.headers.get("Allow")
    message = f"Invalid URL ({request.method} {request.path})"
    if missing.status == 405 and allowed:
        message += f": allowed methods are {allowed}"
    return openai_error(missing.status, message, headers={"Allow": allowed} if allowed else None)


def openai_error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.Response(
        body=error_body(status, message, code=code, param=param),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def refusal(reason: Reason, tenant_id: str, hold: int, remaining: int) -> web.Response:
    """402 when the budget cannot cover the hold, 403 when the subscription cannot spend,
    429 (retry in a second) when this replica's lease slice is used up and no more could be
    had right now while the shared budget may still have room."""
    headers = {"x-budget-remaining": micros_text(max(remaining, 0))}
    if reason in (Reason.INACTIVE, Reason.PERIOD_ENDED):
        status = 403
    elif reason is Reason.LEASE_EXHAUSTED:
        status, headers["retry-after"] = 429, "1"
    else:
        status = 402
    message = f"budget refused for tenant {tenant_id!r}: {reason.value} (hold {hold} micro-units)"
    return openai_error(status, message, code=reason.value, headers=headers)
