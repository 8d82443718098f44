"""``/metrics``: Prometheus text, outside ``/api/v1`` and without a key."""

from __future__ import annotations

from litestar import get

from .common import Store

__all__ = ["metrics"]


@get("/metrics", include_in_schema=False, media_type="text/plain; version=0.0.4", sync_to_thread=True)
def metrics(store: Store) -> str:
    """Outbox rows by status and the oldest pending row's age."""
    state = store.outbox_state()
    lines = ["# TYPE billing_outbox_events gauge"]
    for status in ("pending", "published", "dead"):
        lines.append(f'billing_outbox_events{{status="{status}"}} {state.counts.get(status, 0)}')
    lines += ["# TYPE billing_outbox_oldest_pending_seconds gauge"]
    lines.append(f"billing_outbox_oldest_pending_seconds {state.oldest_pending_s:.3f}")
    return "\n".join(lines) + "\n"
