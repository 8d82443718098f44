"""What the package's aiohttp servers share to stay up under hostile input: malformed
HTTP is one log line (not an ERROR traceback), a body must arrive within a deadline,
and nothing a handler raises becomes a traceback on the wire."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["QuietServerLog", "error_middleware", "json_error", "read_body"]

log = logging.getLogger("billing_gateway.http")


class QuietServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, minus the traceback for requests that are not HTTP."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            log.info("malformed HTTP request refused: %s", exc.message or type(exc).__name__)
            return
        self.logger.error(msg, *args, exc_info=exc_info, **kwargs)


def json_error(status: int, message: str, field: str | None = None) -> web.Response:
    body = {"error": message, "field": field}
    return web.json_response(body, status=status)


async def read_body(request: web.Request, timeout_s: float = 10.0) -> bytes:
    """The request body, or :class:`web.HTTPRequestTimeout` when it trickles in too slowly."""
    try:
        return await asyncio.wait_for(request.read(), timeout_s)
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="the request body did not arrive in time") from None


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """HTTP errors as JSON bodies; anything unexpected is logged once and answered 500."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.text or exc.reason)
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return json_error(500, "internal error")
