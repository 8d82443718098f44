"""The Litestar application: the resources under ``/api/v1``, error handlers, OpenAPI at
``/openapi.json``, bodies decoded without floats.

Handlers are synchronous and run on a thread pool (``sync_to_thread``), the key lookup
included: a request waiting on the database never holds up the event loop, so the other
requests (and whatever else shares the loop) go on."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import msgspec
import sqlalchemy as sa
from litestar import Litestar, Response, Router
from litestar.di import Provide
from litestar.exceptions import SerializationException, ValidationException
from litestar.openapi import OpenAPIConfig

from billing_gateway.billing.domain import BillingError, Invalid
from billing_gateway.billing.store import BillingStore

from . import customers, events, invoices, plans, routing, subscriptions, usage
from .auth import authenticate
from .common import Req
from .metrics import metrics

__all__ = ["MAX_BODY", "create_app"]

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024

_body = msgspec.json.Decoder(float_hook=Decimal)
"""Request bodies: numbers with a fraction become exact Decimals, never binary floats."""


class _Request(Req):
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


def _billing_error(_: Req, exc: BillingError) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"status_code": exc.status_code, "detail": str(exc)}
    if isinstance(exc, Invalid) and exc.field is not None:
        body["extra"] = [{"key": exc.field, "message": str(exc), "position": exc.position}]
    return Response(body, status_code=exc.status_code)


def _database_unavailable(request: Req, exc: sa.exc.DBAPIError) -> Response[dict[str, Any]]:
    """The database is unreachable, or gave up on a lock: nothing was done; retry (with the
    same Idempotency-Key)."""
    log.warning("database unavailable for %s %s: %s", request.method, request.url.path, exc.orig)
    body = {"status_code": 503, "detail": "database unavailable; retry shortly"}
    return Response(body, status_code=503, headers={"Retry-After": "1"})


def _invalid_body(_: Req, exc: ValidationException) -> Response[dict[str, Any]]:
    """A body that parses but breaks the schema is 422, naming the fields (bad JSON is a 400)."""
    problems = exc.extra if isinstance(exc.extra, list) else []
    fields = "; ".join(
        f"{p.get('key', '?')}: {p.get('message', '')}" for p in problems if isinstance(p, dict)
    )
    return Response({"status_code": 422, "detail": fields or exc.detail, "extra": problems}, status_code=422)


def create_app(store: BillingStore) -> Litestar:
    def provide_store() -> BillingStore:
        return store

    api = Router(
        path="/api/v1",
        route_handlers=[
            *customers.HANDLERS, *plans.HANDLERS, *subscriptions.HANDLERS, *usage.HANDLERS,
            *invoices.HANDLERS, *events.HANDLERS, *routing.HANDLERS,
        ],
        dependencies={"who": Provide(authenticate, sync_to_thread=True)},
    )  # fmt: skip
    return Litestar(
        route_handlers=[api, metrics],
        dependencies={"store": Provide(provide_store, sync_to_thread=False, use_cache=True)},
        exception_handlers={
            BillingError: _billing_error,
            ValidationException: _invalid_body,
            sa.exc.OperationalError: _database_unavailable,
            sa.exc.InterfaceError: _database_unavailable,
        },
        openapi_config=OpenAPIConfig(title="billing_gateway Billing API", version="1.0.0", path="/"),
        request_class=_Request,
        request_max_body_size=MAX_BODY,
        debug=False,
        logging_config=None,  # the package's one log format, set up by the command
    )
