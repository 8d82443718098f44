"""Stripe sync: signed webhooks in, the payment processor behind a protocol out.

- :mod:`.webhook` verifies ``POST /api/v1/stripe/webhook`` bodies; :mod:`.inbox` stores
  each event once and lists or redrives them;
- :mod:`.handlers` applies an event to billing (per type, in arrival-order-proof steps of
  :class:`billing_gateway.billing.store.StripeSync`); :mod:`.worker` runs them with
  retries, backoff and a dead state;
- :mod:`.gateway` is the :class:`~.gateway.PaymentGateway` protocol and its Stripe
  implementation (``stripe.StripeClient``), used when ``STRIPE_SECRET_KEY`` is set;
- :mod:`.settings` reads ``STRIPE_*`` from the environment; :mod:`.metrics` counts.

Nothing here is imported by the rest of billing unless Stripe is used.
"""
