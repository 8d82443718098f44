"""API keys on requests: ``Authorization: Bearer <key>``, the scopes a key may hold, and
what a customer-bound key may see and do."""

from __future__ import annotations

from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from billing_gateway.billing.domain import NotFound
from billing_gateway.billing.store import Principal

from .common import Req, Store

__all__ = ["SCOPES", "authenticate", "need", "unbound", "visible"]

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
    "billing:routing:read",
    "billing:routing:write",
)


def authenticate(request: Req, store: Store) -> Principal:
    """The caller of ``request`` (a database read: run it on a worker thread)."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise NotAuthorizedException(detail="missing Authorization: Bearer <key>")
    found = store.authenticate(secret.strip())
    if found is None:
        raise NotAuthorizedException(detail="unknown API key")
    return found


def need(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes and "billing:*" not in principal.scopes:
        raise PermissionDeniedException(detail=f"this key lacks the scope {scope}")


def visible(principal: Principal, customer_id: str, what: str) -> None:
    """A customer-bound key sees only its customer's objects: others are 404."""
    if principal.customer_id is not None and principal.customer_id != customer_id:
        raise NotFound(f"{what} not found")


def unbound(principal: Principal, action: str) -> None:
    """Objects every customer shares are not a customer-bound key's to create or change."""
    if principal.customer_id is not None:
        raise PermissionDeniedException(detail=f"a customer-bound key cannot {action}")
