"""Prometheus metrics of a consumer and its gateway (budgets and routing), read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .consumer import EventConsumer
from .models import ApplyOutcome, Reason

if TYPE_CHECKING:
    from .leases import BudgetLeases

__all__ = ["ConsumerCollector", "LeasesCollector", "registry_for"]


class ConsumerCollector(Collector):
    def __init__(self, consumer: EventConsumer) -> None:
        self.consumer = consumer

    def collect(self) -> Iterator[Metric]:
        c = self.consumer
        events = CounterMetricFamily(
            "billing_gateway_events", "Events applied, by outcome", labels=["outcome"]
        )
        for outcome in ApplyOutcome:
            events.add_metric([outcome.value], c.outcomes[outcome])
        yield events
        dead = CounterMetricFamily(
            "billing_gateway_dead_letters",
            "Messages copied to the dead-letter subject",
            labels=["kind"],
        )
        for kind in ("oversized", "invalid_event", "parking_full", "rejected", "internal"):
            dead.add_metric([kind], c.dead_lettered[kind])
        yield dead
        yield CounterMetricFamily(
            "billing_gateway_dead_letter_failures",
            "Dead-letter publishes that failed",
            value=c.dlq_failures,
        )
        yield CounterMetricFamily(
            "billing_gateway_consumer_rebuilds",
            "Times the stream consumer was re-created",
            value=c.consumer_rebuilds,
        )
        yield CounterMetricFamily("billing_gateway_snapshots", "Snapshots written", value=c.snapshots_written)
        yield CounterMetricFamily(
            "billing_gateway_stream_resets",
            "Times the stream was found recreated or wiped behind the cursor",
            value=c.stream_resets,
        )
        yield CounterMetricFamily(
            "billing_gateway_table_rebuilds",
            "Times the table was brought up to date from billing (after a gap or a reset)",
            value=c.table_rebuilds,
        )
        routing = c.gateway.routing_counters()
        yield CounterMetricFamily(
            "billing_gateway_route_no_match",
            "Route calls that no policy with a healthy target answered",
            value=routing["no_match"],
        )
        yield CounterMetricFamily(
            "billing_gateway_route_evaluation_errors",
            "Policy expressions that failed on a request (a missing key, a wrong type): no match",
            value=routing["evaluation_errors"],
        )
        gauges = {
            "billing_gateway_cursor": ("Stream sequence of the last applied message", c.cursor),
            "billing_gateway_consumer_lag": ("Stream messages not yet applied", c.lag or 0),
            "billing_gateway_consumer_staleness_seconds": (
                "Age of the last applied event",
                c.staleness_s or 0.0,
            ),
            "billing_gateway_consumer_gap": (
                "1 when events after the cursor are gone",
                int(c.gap_detected),
            ),
            "billing_gateway_consumer_connected": ("1 when connected to NATS", int(c.connected)),
            "billing_gateway_consumer_current": (
                "1 when caught up with no gap",
                int(c.is_current()),
            ),
            "billing_gateway_tenants": ("Rows in the budget table", len(c.gateway)),
            "billing_gateway_routing_policies": ("Policies in the routing table", len(c.gateway.policies())),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)


class LeasesCollector(Collector):
    """The budget leases of a replica (``billing_gateway.leases``)."""

    def __init__(self, leases: BudgetLeases) -> None:
        self.leases = leases

    def collect(self) -> Iterator[Metric]:
        s = self.leases.stats
        slices, micros = self.leases.held()
        yield GaugeMetricFamily(
            "billing_gateway_lease_slices_held", "Tenants with an unspent slice", value=slices
        )
        yield GaugeMetricFamily(
            "billing_gateway_lease_held_micros", "Unspent micro-units held in slices", value=micros
        )
        counters = {
            "billing_gateway_lease_grants": ("Calls that enlarged a slice", s.grants),
            "billing_gateway_lease_granted_micros": ("Micro-units granted", s.granted),
            "billing_gateway_lease_returns": ("Slices given back", s.returns),
            "billing_gateway_lease_returned_micros": ("Micro-units given back", s.returned),
            "billing_gateway_lease_round_trips": ("Lease script calls sent to Redis", s.round_trips),
            "billing_gateway_lease_errors": ("Lease script calls that failed", s.errors),
            "billing_gateway_lease_expired": ("Leases that passed their deadline unrenewed", s.expired),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)
        refusals = CounterMetricFamily(
            "billing_gateway_lease_refusals",
            "Spends refused with leases attached, by reason",
            labels=["reason"],
        )
        for reason in Reason:
            if reason is not Reason.OK:
                refusals.add_metric([reason.value], s.refusals[reason])
        yield refusals


def registry_for(consumer: EventConsumer, leases: BudgetLeases | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ConsumerCollector(consumer))
    if leases is not None:
        registry.register(LeasesCollector(leases))
    return registry
