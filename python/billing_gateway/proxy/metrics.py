"""The proxy's Prometheus metrics, counted on the request path (plain integer increments)
and read at scrape time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["ProxyStats"]


class ProxyStats(Collector):
    def __init__(self) -> None:
        self.responses: Counter[tuple[str, int]] = Counter()
        """Answers by endpoint and status."""
        self.failovers: Counter[str] = Counter()
        """Upstream failures that moved a request on, by target."""
        self.charged: Counter[str] = Counter()
        """Micro-units committed, by target."""
        self.streams_cut = 0
        self.streams_left = 0

    def collect(self) -> Iterator[Metric]:
        responses = CounterMetricFamily(
            "billing_gateway_proxy_responses",
            "Proxy answers, by endpoint and status",
            labels=["endpoint", "status"],
        )
        for (endpoint, status), n in sorted(self.responses.items()):
            responses.add_metric([endpoint, str(status)], n)
        yield responses
        failovers = CounterMetricFamily(
            "billing_gateway_proxy_failovers",
            "Upstream failures (429, 5xx, connection, timeout) that moved a request to the next target",
            labels=["target"],
        )
        for target, n in sorted(self.failovers.items()):
            failovers.add_metric([target], n)
        yield failovers
        charged = CounterMetricFamily(
            "billing_gateway_proxy_charged_micros",
            "Micro-units committed for answers, by target",
            labels=["target"],
        )
        for target, n in sorted(self.charged.items()):
            charged.add_metric([target], n)
        yield charged
        yield CounterMetricFamily(
            "billing_gateway_proxy_streams_cut", "Streams ended at their hold (finish_reason length)",
            value=self.streams_cut,
        )  # fmt: skip
        yield CounterMetricFamily(
            "billing_gateway_proxy_client_disconnects", "Streams the client left before their end",
            value=self.streams_left,
        )  # fmt: skip
