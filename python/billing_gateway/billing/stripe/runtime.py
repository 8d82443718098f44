"""What the billing service's parts share about Stripe in one process: the settings, the
payment gateway (when ``STRIPE_SECRET_KEY`` is set), the metrics, and how the webhook
endpoint wakes the worker."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from billing_gateway.billing.domain import Conflict

from .gateway import PaymentGateway, StripeGateway
from .metrics import StripeMetrics
from .settings import StripeSettings

__all__ = ["StripeRuntime"]


def _nothing() -> None:
    return None


@dataclass
class StripeRuntime:
    settings: StripeSettings = field(default_factory=StripeSettings)
    gateway: PaymentGateway | None = None
    metrics: StripeMetrics = field(default_factory=StripeMetrics)
    wake: Callable[[], None] = _nothing
    """Called after the endpoint stored a new event (the worker of this process sets it)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StripeRuntime:
        """From ``STRIPE_*`` (:class:`.settings.SettingsError` names a bad one)."""
        settings = StripeSettings.from_env(environ)
        metrics = StripeMetrics()
        gateway = StripeGateway(settings, metrics) if settings.secret_key else None
        return cls(settings, gateway, metrics)

    def require_gateway(self) -> PaymentGateway:
        """The gateway, or :class:`Conflict` naming what is not configured."""
        if self.gateway is None:
            raise Conflict("Stripe is not configured (set STRIPE_SECRET_KEY)")
        return self.gateway
