"""Verifying a webhook: the raw body against ``Stripe-Signature`` with the ``stripe``
library (``stripe.Webhook.construct_event``), under each configured secret in turn
(several while a secret is rotated), 300 s tolerance both ways: the library refuses old
timestamps, and a timestamp further in the future than the tolerance is refused here."""

from __future__ import annotations

import time

import stripe

from .objects import Event, decode_event

__all__ = ["MAX_WEBHOOK_BODY", "BadWebhook", "verify"]

MAX_WEBHOOK_BODY = 512 * 1024
"""Larger bodies are refused before any work (Stripe's events are far smaller)."""


class BadWebhook(Exception):
    """A request that is not a verified Stripe event: answered 400, nothing stored."""


def _timestamp(header: str) -> int | None:
    for part in header.split(","):
        key, _, value = part.partition("=")
        if key.strip() == "t" and value.strip().isdigit():
            return int(value)
    return None


def verify(
    body: bytes,
    header: str | None,
    secrets: tuple[str, ...],
    tolerance_s: int = 300,
    now: float | None = None,
) -> Event:
    """The verified event, or :class:`BadWebhook` saying why not."""
    if not header:
        raise BadWebhook("missing Stripe-Signature header")
    if len(body) > MAX_WEBHOOK_BODY:
        raise BadWebhook(f"body larger than {MAX_WEBHOOK_BODY} bytes")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise BadWebhook("body is not UTF-8") from None
    signed = _timestamp(header)
    if signed is not None and signed > (now or time.time()) + tolerance_s:
        raise BadWebhook(f"Stripe-Signature timestamp {signed} is in the future")
    failure = "no webhook secret configured"
    for secret in secrets:
        try:
            stripe.Webhook.construct_event(text, header, secret, tolerance=tolerance_s)
        except stripe.SignatureVerificationError as exc:
            failure = str(exc.user_message or exc)
            continue
        except Exception as exc:  # the signature matched, but the body is not an event's JSON
            raise BadWebhook(f"body: not a Stripe event ({type(exc).__name__}: {exc})") from None
        try:
            return decode_event(body)
        except Exception as exc:
            raise BadWebhook(str(exc)) from None
    raise BadWebhook(f"Stripe-Signature: {failure}")
