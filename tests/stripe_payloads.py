"""Stripe payloads shaped like the real ones (API version 2025-03-31 and later: periods on
the subscription items, an invoice's subscription under ``parent``), and webhook bodies
signed with the ``stripe`` library's own helper."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import stripe

API_VERSION = "2025-03-31.basil"
SECRET = "whsec_test_secret_0123456789"
T0 = 1_780_000_000  # 2026-05-28
MONTH = 30 * 86_400
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_1Test{next(_ids):016d}"


def customer(cus: str, *, tenant_id: str | None = None, name: str = "Acme", email: str = "billing@acme.test",
             created: int = T0) -> dict[str, Any]:  # fmt: skip
    return {
        "id": cus, "object": "customer", "address": None, "balance": 0, "created": created,
        "currency": "usd", "default_source": None, "delinquent": False, "description": None,
        "email": email, "invoice_prefix": "ACME0001",
        "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None},
        "livemode": False, "metadata": {"tenant_id": tenant_id} if tenant_id else {}, "name": name,
        "phone": None, "preferred_locales": [], "shipping": None, "tax_exempt": "none",
    }  # fmt: skip


def price(price_id: str, amount: int = 2900, currency: str = "usd") -> dict[str, Any]:
    return {
        "id": price_id, "object": "price", "active": True, "billing_scheme": "per_unit",
        "created": T0 - MONTH, "currency": currency, "livemode": False, "lookup_key": None,
        "metadata": {}, "nickname": None, "product": "prod_1TestPro",
        "recurring": {"interval": "month", "interval_count": 1, "meter": None, "usage_type": "licensed"},
        "tax_behavior": "unspecified", "type": "recurring", "unit_amount": amount,
        "unit_amount_decimal": str(amount),
    }  # fmt: skip


def subscription(sub: str, cus: str, *, status: str = "active", price_id: str = "price_pro",
                 start: int = T0, end: int = T0 + MONTH, cancel_at_period_end: bool = False,
                 tenant_id: str | None = None, on_items: bool = True) -> dict[str, Any]:  # fmt: skip
    """A subscription; ``on_items=False`` puts the period on the subscription (before 2025-03-31)."""
    item: dict[str, Any] = {
        "id": f"si_{sub[4:]}", "object": "subscription_item", "created": start, "discounts": [],
        "metadata": {}, "price": price(price_id), "quantity": 1, "subscription": sub, "tax_rates": [],
    }  # fmt: skip
    body: dict[str, Any] = {
        "id": sub, "object": "subscription", "application": None, "automatic_tax": {"enabled": False},
        "billing_cycle_anchor": start, "cancel_at": end if cancel_at_period_end else None,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": None, "collection_method": "charge_automatically", "created": T0,
        "currency": "usd", "customer": cus, "days_until_due": None, "default_payment_method": None,
        "description": None, "discounts": [], "ended_at": None,
        "items": {"object": "list", "data": [item], "has_more": False, "total_count": 1,
                  "url": f"/v1/subscription_items?subscription={sub}"},
        "latest_invoice": None, "livemode": False,
        "metadata": {"tenant_id": tenant_id} if tenant_id else {},
        "start_date": T0, "status": status,
        "trial_end": end if status == "trialing" else None,
        "trial_start": start if status == "trialing" else None,
    }  # fmt: skip
    if on_items:
        item |= {"current_period_start": start, "current_period_end": end}
    else:
        body |= {"current_period_start": start, "current_period_end": end}
    return body


def invoice(inv: str, sub: str, cus: str, *, amount: int = 2900, status: str = "paid",
            start: int = T0, end: int = T0 + MONTH, currency: str = "usd",
            billing_reason: str = "subscription_cycle") -> dict[str, Any]:  # fmt: skip
    """An invoice whose line bills the period [start, end) of a subscription."""
    paid = amount if status == "paid" else 0
    line = {
        "id": f"il_{inv[3:]}", "object": "line_item", "amount": amount, "currency": currency,
        "description": "1 × Pro (at $29.00 / month)",  # noqa: RUF001 (Stripe's own sign) "discountable": True, "invoice": inv,
        "livemode": False, "metadata": {},
        "parent": {"type": "subscription_item_details", "invoice_item_details": None,
                   "subscription_item_details": {"invoice_item": None, "proration": False,
                                                 "subscription": sub, "subscription_item": f"si_{sub[4:]}"}},
        "period": {"start": start, "end": end},
        "pricing": {"type": "price_details", "unit_amount_decimal": str(amount),
                    "price_details": {"price": "price_pro", "product": "prod_1TestPro"}},
        "quantity": 1,
    }  # fmt: skip
    return {
        "id": inv, "object": "invoice", "account_country": "US", "amount_due": amount,
        "amount_paid": paid, "amount_remaining": amount - paid, "attempt_count": 1,
        "attempted": True, "billing_reason": billing_reason, "collection_method": "charge_automatically",
        "created": start, "currency": currency, "customer": cus, "customer_email": "billing@acme.test",
        "lines": {"object": "list", "data": [line], "has_more": False, "total_count": 1,
                  "url": f"/v1/invoices/{inv}/lines"},
        "livemode": False, "metadata": {}, "number": "ACME0001-0001",
        "parent": {"type": "subscription_details", "quote_details": None,
                   "subscription_details": {"metadata": {}, "subscription": sub}},
        "period_end": start, "period_start": start - MONTH, "status": status,
        "status_transitions": {"finalized_at": start, "paid_at": start if status == "paid" else None},
        "subtotal": amount, "total": amount,
    }  # fmt: skip


def event(event_type: str, obj: dict[str, Any], *, created: int = T0, event_id: str | None = None,
          previous: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    data: dict[str, Any] = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {
        "id": event_id or _id("evt"), "object": "event", "api_version": API_VERSION, "created": created,
        "data": data, "livemode": False, "pending_webhooks": 1,
        "request": {"id": _id("req"), "idempotency_key": None}, "type": event_type,
    }  # fmt: skip


def body(evt: dict[str, Any]) -> bytes:
    return json.dumps(evt, indent=2).encode()  # Stripe sends pretty-printed JSON


def sign(payload: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    """``Stripe-Signature`` for ``payload``, by the stripe library's own helper."""
    return str(
        stripe.WebhookSignature.generate_signature_header(
            payload.decode(), secret, timestamp=int(time.time()) if timestamp is None else timestamp
        )
    )
