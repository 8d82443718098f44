"""Stripe sync's metrics, in this process, in Prometheus text (on the billing service's
``/metrics``): webhook events by type and outcome, processing latency (from receipt to
applied), Stripe API errors by code; the dead events are counted from the database."""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["LATENCY_BUCKETS_S", "StripeMetrics"]

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


class StripeMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.webhooks: Counter[tuple[str, str]] = Counter()
        """(event type, outcome): ``stored``, ``duplicate``, ``rejected`` at the endpoint;
        ``processed``, ``ignored``, ``failed``, ``dead`` in the worker."""
        self.api_errors: Counter[str] = Counter()
        self._buckets = [0] * len(LATENCY_BUCKETS_S)
        self._latency_sum = 0.0
        self._latency_count = 0

    def webhook(self, event_type: str, outcome: str) -> None:
        with self._lock:
            self.webhooks[(event_type, outcome)] += 1

    def api_error(self, code: str) -> None:
        with self._lock:
            self.api_errors[code] += 1

    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency_sum += seconds
            self._latency_count += 1
            for i, bound in enumerate(LATENCY_BUCKETS_S):
                if seconds <= bound:
                    self._buckets[i] += 1

    def render(self, by_status: dict[str, int]) -> list[str]:
        with self._lock:
            lines = ["# TYPE billing_stripe_webhook_events_total counter"]
            for (event_type, outcome), n in sorted(self.webhooks.items()):
                labels = f'type="{_label(event_type)}",outcome="{outcome}"'
                lines.append(f"billing_stripe_webhook_events_total{{{labels}}} {n}")
            lines.append("# TYPE billing_stripe_processing_seconds histogram")
            for bound, n in zip(LATENCY_BUCKETS_S, self._buckets, strict=True):
                lines.append(f'billing_stripe_processing_seconds_bucket{{le="{bound}"}} {n}')
            lines.append(f'billing_stripe_processing_seconds_bucket{{le="+Inf"}} {self._latency_count}')
            lines.append(f"billing_stripe_processing_seconds_sum {self._latency_sum:.6f}")
            lines.append(f"billing_stripe_processing_seconds_count {self._latency_count}")
            lines.append("# TYPE billing_stripe_api_errors_total counter")
            for code, n in sorted(self.api_errors.items()):
                lines.append(f'billing_stripe_api_errors_total{{code="{_label(code)}"}} {n}')
        lines.append("# TYPE billing_stripe_events gauge")
        for status in ("pending", "processed", "ignored", "dead"):
            lines.append(f'billing_stripe_events{{status="{status}"}} {by_status.get(status, 0)}')
        return lines
