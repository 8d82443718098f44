"""The payment processor behind a protocol: :class:`PaymentGateway`, and
:class:`StripeGateway`, its implementation on ``stripe.StripeClient``.

Every call that creates or changes something passes an idempotency key to Stripe, so a
retried request never acts twice. Stripe's errors become :class:`PaymentError`, a
billing error whose HTTP status and message name the cause (see :func:`payment_error`);
each is counted by its Stripe code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import stripe

from billing_gateway.billing.domain import BillingError, NotFound

from .metrics import StripeMetrics
from .settings import StripeSettings

__all__ = ["PaymentError", "PaymentGateway", "StripeGateway", "payment_error"]

R = TypeVar("R")


class PaymentError(BillingError):
    """Stripe refused or could not take a request; ``status_code`` says whose problem it is."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


def payment_error(exc: stripe.StripeError) -> PaymentError:
    """A Stripe error as the answer billing gives: 402 a declined card, 404 an object
    Stripe does not have, 400 a request it refused (naming the parameter), 409 an
    idempotency conflict, 502 when Stripe refused billing's key or failed, 503 when it is
    unreachable or rate-limits."""
    code = str(getattr(exc, "code", None) or type(exc).__name__)
    said = " ".join(str(exc.user_message or exc).split())
    if isinstance(exc, stripe.CardError):
        return PaymentError(402, code, f"payment declined by Stripe ({code}): {said}")
    if isinstance(exc, stripe.IdempotencyError):
        return PaymentError(409, code, f"Stripe: idempotency key reused with another request: {said}")
    if isinstance(exc, stripe.InvalidRequestError):
        param = f" (parameter {exc.param})" if exc.param else ""
        if code == "resource_missing" and exc.http_status == 404:
            return PaymentError(404, code, f"not found at Stripe: {said}")
        return PaymentError(400, code, f"Stripe refused the request{param} ({code}): {said}")
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return PaymentError(502, code, f"Stripe refused billing's API key (STRIPE_SECRET_KEY): {said}")
    if isinstance(exc, stripe.RateLimitError):
        return PaymentError(503, code, f"Stripe is rate-limiting billing; retry shortly: {said}")
    if isinstance(exc, stripe.APIConnectionError):
        return PaymentError(503, code, f"Stripe is unreachable; retry shortly: {said}")
    return PaymentError(502, code, f"Stripe failed ({code}): {said}")


class PaymentGateway(Protocol):
    """What billing asks of a payment processor. Objects come back as Stripe-shaped dicts."""

    def ensure_customer(self, tenant_id: str, name: str, email: str, existing: str | None) -> str: ...
    def create_subscription(
        self, customer: str, price: str, tenant_id: str, trial_days: int, key: str
    ) -> dict[str, Any]: ...
    def change_plan(self, subscription: str, price: str, at_period_end: bool, key: str) -> dict[str, Any]: ...
    def cancel(self, subscription: str, at_period_end: bool, key: str) -> dict[str, Any]: ...
    def report_usage(self, customer: str, event_name: str, value: int, identifier: str) -> None: ...
    def portal_session(self, customer: str, return_url: str) -> str: ...
    def setup_intent(self, customer: str, key: str) -> dict[str, Any]: ...
    def payment_methods(self, customer: str) -> tuple[list[dict[str, Any]], str | None]: ...
    def set_default_payment_method(self, customer: str, payment_method: str) -> None: ...
    def detach_payment_method(self, customer: str, payment_method: str) -> None: ...
    def preview_invoice(self, customer: str, subscription: str | None) -> dict[str, Any]: ...
    def retrieve(self, kind: str, object_id: str) -> dict[str, Any]: ...


class StripeGateway:
    """:class:`PaymentGateway` on Stripe's API (or ``settings.api_base``, a local fake)."""

    def __init__(
        self, settings: StripeSettings, metrics: StripeMetrics | None = None, max_network_retries: int = 2
    ) -> None:
        if settings.secret_key is None:
            raise ValueError("StripeGateway needs STRIPE_SECRET_KEY")
        bases: Any = {"api": settings.api_base} if settings.api_base else None
        self.client = stripe.StripeClient(
            settings.secret_key, base_addresses=bases, max_network_retries=max_network_retries
        )
        self.settings = settings
        self.metrics = metrics or StripeMetrics()

    def _call(self, work: Callable[[], R]) -> R:
        try:
            return work()
        except stripe.StripeError as exc:
            error = payment_error(exc)
            self.metrics.api_error(error.code)
            raise error from None

    @staticmethod
    def _plain(found: Any) -> dict[str, Any]:
        plain: dict[str, Any] = found.to_dict()
        return plain

    def ensure_customer(self, tenant_id: str, name: str, email: str, existing: str | None) -> str:
        """The Stripe customer of a billing customer, created (tenant id in its metadata) if
        it has none."""
        if existing is not None:
            return existing
        params: Any = {"name": name, "metadata": {"tenant_id": tenant_id}}
        if email:
            params["email"] = email
        created = self._call(
            lambda: self.client.v1.customers.create(params, {"idempotency_key": f"bg-customer-{tenant_id}"})
        )
        return str(created.id)

    def create_subscription(
        self, customer: str, price: str, tenant_id: str, trial_days: int, key: str
    ) -> dict[str, Any]:
        params: Any = {
            "customer": customer,
            "items": [{"price": price}],
            "metadata": {"tenant_id": tenant_id},
            "proration_behavior": self.settings.proration_behavior,
        }
        if trial_days:
            params["trial_period_days"] = trial_days
        return self._plain(
            self._call(lambda: self.client.v1.subscriptions.create(params, {"idempotency_key": key}))
        )

    def change_plan(self, subscription: str, price: str, at_period_end: bool, key: str) -> dict[str, Any]:
        """Now: the item's price swapped, prorated as configured. At the period's end: a
        subscription schedule whose next phase has the new price."""
        current = self._plain(self._call(lambda: self.client.v1.subscriptions.retrieve(subscription)))
        item = current["items"]["data"][0]
        if not at_period_end:
            params: Any = {
                "items": [{"id": item["id"], "price": price}],
                "proration_behavior": self.settings.proration_behavior,
            }
            return self._plain(
                self._call(
                    lambda: self.client.v1.subscriptions.update(
                        subscription, params, {"idempotency_key": key}
                    )
                )
            )
        schedule = self._call(
            lambda: self.client.v1.subscription_schedules.create(
                {"from_subscription": subscription}, {"idempotency_key": f"{key}-schedule"}
            )
        )
        start = item.get("current_period_start") or current.get("current_period_start")
        end = item.get("current_period_end") or current.get("current_period_end")
        phases: Any = [
            {"items": [{"price": item["price"]["id"]}], "start_date": start, "end_date": end},
            {"items": [{"price": price}]},
        ]
        self._call(
            lambda: self.client.v1.subscription_schedules.update(
                schedule.id,
                {"phases": phases, "end_behavior": "release"},
                {"idempotency_key": f"{key}-phases"},
            )
        )
        return current

    def cancel(self, subscription: str, at_period_end: bool, key: str) -> dict[str, Any]:
        options: Any = {"idempotency_key": key}
        if at_period_end:
            params: Any = {"cancel_at_period_end": True}
            return self._plain(
                self._call(lambda: self.client.v1.subscriptions.update(subscription, params, options))
            )
        return self._plain(
            self._call(lambda: self.client.v1.subscriptions.cancel(subscription, None, options))
        )

    def report_usage(self, customer: str, event_name: str, value: int, identifier: str) -> None:
        """A meter event (Stripe dedupes by ``identifier``)."""
        params: Any = {
            "event_name": event_name,
            "payload": {"stripe_customer_id": customer, "value": str(value)},
            "identifier": identifier,
        }
        self._call(lambda: self.client.v1.billing.meter_events.create(params))

    def portal_session(self, customer: str, return_url: str) -> str:
        params: Any = {"customer": customer, "return_url": return_url}
        return str(self._call(lambda: self.client.v1.billing_portal.sessions.create(params)).url)

    def setup_intent(self, customer: str, key: str) -> dict[str, Any]:
        params: Any = {"customer": customer, "usage": "off_session"}
        found = self._call(lambda: self.client.v1.setup_intents.create(params, {"idempotency_key": key}))
        return {"id": found.id, "client_secret": found.client_secret, "status": found.status}

    def payment_methods(self, customer: str) -> tuple[list[dict[str, Any]], str | None]:
        """The customer's payment methods, and the default one's id."""
        listed = self._call(lambda: self.client.v1.customers.payment_methods.list(customer))
        owner = self._plain(self._call(lambda: self.client.v1.customers.retrieve(customer)))
        settings = owner.get("invoice_settings") or {}
        default = settings.get("default_payment_method")
        return [self._plain(m) for m in listed.data], default if isinstance(default, str) else None

    def _owned(self, customer: str, payment_method: str) -> None:
        """A payment method of another customer does not exist for this one."""
        found = self._plain(self._call(lambda: self.client.v1.payment_methods.retrieve(payment_method)))
        if found.get("customer") != customer:
            raise NotFound(f"payment method {payment_method} not found")

    def set_default_payment_method(self, customer: str, payment_method: str) -> None:
        self._owned(customer, payment_method)
        params: Any = {"invoice_settings": {"default_payment_method": payment_method}}
        self._call(lambda: self.client.v1.customers.update(customer, params))

    def detach_payment_method(self, customer: str, payment_method: str) -> None:
        self._owned(customer, payment_method)
        self._call(lambda: self.client.v1.payment_methods.detach(payment_method))

    def preview_invoice(self, customer: str, subscription: str | None) -> dict[str, Any]:
        params: Any = {"customer": customer}
        if subscription is not None:
            params["subscription"] = subscription
        return self._plain(self._call(lambda: self.client.v1.invoices.create_preview(params)))

    def retrieve(self, kind: str, object_id: str) -> dict[str, Any]:
        """A customer, subscription or invoice as Stripe has it now (to order ambiguous events)."""
        services: dict[str, Any] = {
            "customer": self.client.v1.customers,
            "subscription": self.client.v1.subscriptions,
            "invoice": self.client.v1.invoices,
        }
        return self._plain(self._call(lambda: services[kind].retrieve(object_id)))
