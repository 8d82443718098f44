"""The Billing REST API (ASGI, Litestar) under ``/api/v1``; OpenAPI at ``/openapi.json``.

Every request carries ``Authorization: Bearer <key>``. A key has scopes
(``billing:customers:create``, ...; ``billing:*`` grants all) and may be bound to one
customer, in which case other customers' objects do not exist for it (404, not 403).
Every POST honours ``Idempotency-Key`` (1 to 255 visible ASCII characters): the same
key with the same body replays the first response; with another body it is a 409. The
operation, its outbox event and the recorded answer commit together (see
:mod:`billing_gateway.billing.idempotency`). Customer-bound keys cannot create shared
objects (plans).

Malformed input is a 4xx JSON error naming the problem, never a 500: bodies are at most
64 KiB of UTF-8 JSON, nested at most as deep as the decoder allows; ids in paths and
queries must look like ids. An unreachable database is a 503 with ``Retry-After``.

One module per resource (customers, plans, subscriptions, usage, invoices, events and
budgets, metrics); keys and scopes in :mod:`.auth`; the application in :mod:`.app`.
"""

from __future__ import annotations

from .app import create_app
from .auth import SCOPES

__all__ = ["SCOPES", "create_app"]
