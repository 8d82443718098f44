"""Stripe's configuration, from the environment:

- ``STRIPE_SECRET_KEY``: the API key; set, billing calls Stripe (:mod:`.gateway`) and
  re-fetches objects whose events cannot be ordered;
- ``STRIPE_WEBHOOK_SECRET``: the endpoint's signing secret(s), comma-separated while
  rotating;
- ``STRIPE_PRODUCT_PRICE_MAP``: ``plan_id=price_id,...`` or a JSON object, plan to price;
- ``STRIPE_API_BASE``: another API origin (a local fake in tests);
- ``STRIPE_PRORATION_BEHAVIOR``: ``create_prorations`` (default), ``always_invoice`` or
  ``none``;
- ``STRIPE_PORTAL_RETURN_URL``: where the billing portal sends customers back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["PRORATIONS", "SettingsError", "StripeSettings", "parse_price_map"]

PRORATIONS = ("create_prorations", "always_invoice", "none")


class SettingsError(ValueError):
    """A ``STRIPE_*`` variable that cannot be used; the message names it."""


def parse_price_map(text: str) -> dict[str, str]:
    """``plan_id=price_id,...`` or a JSON object of strings; :class:`SettingsError` otherwise."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            found = json.loads(text)
        except ValueError as exc:
            raise SettingsError(f"STRIPE_PRODUCT_PRICE_MAP: not JSON ({exc})") from None
        if not isinstance(found, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in found.items()
        ):
            raise SettingsError("STRIPE_PRODUCT_PRICE_MAP: expected a JSON object of plan id to price id")
        return found
    mapping: dict[str, str] = {}
    for pair in text.split(","):
        plan, sep, price = (part.strip() for part in pair.partition("="))
        if not sep or not plan or not price:
            raise SettingsError(f"STRIPE_PRODUCT_PRICE_MAP: expected plan_id=price_id, got {pair.strip()!r}")
        mapping[plan] = price
    if len(set(mapping.values())) != len(mapping):
        raise SettingsError("STRIPE_PRODUCT_PRICE_MAP: a price is mapped to two plans")
    return mapping


@dataclass(frozen=True)
class StripeSettings:
    secret_key: str | None = None
    webhook_secrets: tuple[str, ...] = ()
    price_map: Mapping[str, str] = field(default_factory=dict)
    api_base: str | None = None
    proration_behavior: str = "create_prorations"
    portal_return_url: str | None = None
    tolerance_s: int = 300

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StripeSettings:
        env = os.environ if environ is None else environ
        proration = env.get("STRIPE_PRORATION_BEHAVIOR", "create_prorations")
        if proration not in PRORATIONS:
            raise SettingsError(f"STRIPE_PRORATION_BEHAVIOR: expected one of {', '.join(PRORATIONS)}")
        secrets = tuple(s.strip() for s in env.get("STRIPE_WEBHOOK_SECRET", "").split(",") if s.strip())
        return cls(
            secret_key=env.get("STRIPE_SECRET_KEY") or None,
            webhook_secrets=secrets,
            price_map=parse_price_map(env.get("STRIPE_PRODUCT_PRICE_MAP", "")),
            api_base=env.get("STRIPE_API_BASE") or None,
            proration_behavior=proration,
            portal_return_url=env.get("STRIPE_PORTAL_RETURN_URL") or None,
        )

    def price_for(self, plan_id: str) -> str | None:
        return self.price_map.get(plan_id)
