"""``POST /stripe/webhook``: Stripe's signed events in. No API key: the signature is the
authentication. A body that is not a verified event (missing, wrong or expired
signature, a future timestamp, more than :data:`MAX_WEBHOOK_BODY` bytes) is a 400 and
nothing is stored; a verified event is stored once, by its id, and answered 200 at once
(a repeat is a 200 too); the worker applies it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import Response, post
from litestar.di import NamedDependency

from billing_gateway.billing.store import BillingStore
from billing_gateway.billing.stripe import inbox
from billing_gateway.billing.stripe.runtime import StripeRuntime
from billing_gateway.billing.stripe.webhook import MAX_WEBHOOK_BODY, BadWebhook, verify

from .common import Req, Store

__all__ = ["HANDLERS", "Stripe"]

log = logging.getLogger(__name__)
Stripe = NamedDependency[StripeRuntime]


async def _body(request: Req) -> bytes:
    """The raw body, refused (400) as soon as it passes the limit."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_WEBHOOK_BODY:
            raise BadWebhook(f"body larger than {MAX_WEBHOOK_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _store(store: BillingStore, stripe: StripeRuntime, body: bytes, header: str | None) -> dict[str, Any]:
    settings = stripe.settings
    event = verify(body, header, settings.webhook_secrets, settings.tolerance_s)
    new = inbox.receive(store, event, body)
    stripe.metrics.webhook(event.type, "stored" if new else "duplicate")
    if new:
        stripe.wake()
    return {"received": True, "duplicate": not new}


@post("/stripe/webhook", status_code=200, request_max_body_size=None)
async def stripe_webhook(request: Req, store: Store, stripe: Stripe) -> Response[dict[str, Any]]:
    if not stripe.settings.webhook_secrets:
        detail = "Stripe webhooks are not configured (set STRIPE_WEBHOOK_SECRET)"
        return Response(
            {"status_code": 503, "detail": detail}, status_code=503, headers={"Retry-After": "60"}
        )
    try:
        body = await _body(request)
        answer = await asyncio.to_thread(_store, store, stripe, body, request.headers.get("stripe-signature"))
    except BadWebhook as exc:
        stripe.metrics.webhook("unverified", "rejected")
        log.warning("Stripe webhook refused: %s", exc)
        return Response({"status_code": 400, "detail": str(exc)}, status_code=400)
    return Response(answer, status_code=200)


HANDLERS = [stripe_webhook]
