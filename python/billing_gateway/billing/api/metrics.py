"""``/metrics``: Prometheus text, outside ``/api/v1`` and without a key."""

from __future__ import annotations

from litestar import get

from billing_gateway.billing.stripe import inbox

from .common import Store
from .webhook import Stripe

__all__ = ["metrics"]


@get("/metrics", include_in_schema=False, media_type="text/plain; version=0.0.4", sync_to_thread=True)
def metrics(store: Store, stripe: Stripe) -> str:
    """Outbox rows by status and the oldest pending row's age; Stripe sync's figures."""
    state = store.outbox_state()
    lines = ["# TYPE billing_outbox_events gauge"]
    for status in ("pending", "published", "dead"):
        lines.append(f'billing_outbox_events{{status="{status}"}} {state.counts.get(status, 0)}')
    lines += ["# TYPE billing_outbox_oldest_pending_seconds gauge"]
    lines.append(f"billing_outbox_oldest_pending_seconds {state.oldest_pending_s:.3f}")
    lines += stripe.metrics.render(inbox.counts(store))
    return "\n".join(lines) + "\n"
