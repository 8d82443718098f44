"""The events module: the seed payloads, the extensions, encoding, and rejections."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest
from billing_gateway import Gateway, InvalidEvent, decode_event, encode_event, events
from billing_gateway.models import RoutingPolicy, Target, UsageRecord

from .conftest import SEED_NAMES, created, event, seed


def test_seed_payloads_decode_exactly() -> None:
    c = decode_event(seed("subscription_created"))
    assert isinstance(c, events.SubscriptionCreated)
    assert c.event_id == "evt_12345"
    assert c.event_type == "subscription.created"
    assert c.timestamp == datetime(2025, 11, 28, 10, tzinfo=UTC)
    assert c.data.total_budget == Decimal("100.00")
    assert c.data.plan_name == "ProLibr - PRO"
    assert c.data.currency == "USD"
    assert c.data.status == "active"

    u = decode_event(seed("subscription_updated"))
    assert isinstance(u, events.SubscriptionUpdated)
    assert u.data.new_total_budget == Decimal("500.00")
    assert u.data.status is None
    assert u.data.customer_id is None

    p = decode_event(seed("invoice_paid"))
    assert isinstance(p, events.InvoicePaid)
    assert p.data.amount_paid == Decimal("100.00")
    assert p.data.new_period_start == datetime(2025, 12, 28, 10, tzinfo=UTC)


@pytest.mark.parametrize("name", SEED_NAMES)
def test_encode_round_trip_keeps_the_seed_shape(name: str) -> None:
    raw = seed(name)
    decoded = decode_event(raw)
    encoded = encode_event(decoded)
    assert json.loads(encoded) == json.loads(raw)
    assert decode_event(encoded) == decoded


def test_extensions() -> None:
    failed = decode_event(
        event(
            "invoice.payment_failed",
            {"customer_id": "c", "subscription_id": "s", "invoice_id": "i"},
        )
    )
    assert isinstance(failed, events.InvoicePaymentFailed)
    policy = RoutingPolicy("p1", 10, "true", "failover", (Target("a"), Target("b", weight=2)))
    upserted = events.RoutingPolicyUpserted(
        event_id="e1", timestamp=datetime.now(UTC), data=policy, correlation_id="corr"
    )
    assert decode_event(encode_event(upserted)) == upserted
    deleted = decode_event(event("routing_policy.deleted", {"policy_id": "p1"}))
    assert isinstance(deleted, events.RoutingPolicyDeleted)
    record = UsageRecord("cus_1", "sub_1", 5, datetime(2026, 1, 1, tzinfo=UTC), "k")
    reported = events.UsageReported(event_id="e2", timestamp=datetime.now(UTC), data=record)
    assert decode_event(encode_event(reported)) == reported


def test_unknown_event_types_decode_to_unknown_event() -> None:
    raw = event("coupon.created", {"coupon": "x"})
    ev = decode_event(raw)
    assert isinstance(ev, events.UnknownEvent)
    assert ev.event_type == "coupon.created"
    assert json.loads(encode_event(ev)) == json.loads(raw)
    assert "coupon.created" not in events.EVENT_TYPES


def test_encode_rejects_non_events() -> None:
    with pytest.raises(TypeError):
        encode_event({"event_id": "x"})  # type: ignore[arg-type]


def _mutate(path: str, value: object, base: bytes | None = None) -> bytes:
    doc = json.loads(base or seed("subscription_created"))
    *parents, leaf = path.split(".")
    target = doc
    for p in parents:
        target = target[p]
    if value is _DELETE:
        del target[leaf]
    else:
        target[leaf] = value
    return json.dumps(doc).encode()


_DELETE = object()

# (field named in the message, malformed event)
MALFORMED = [
    ("event_id", _mutate("event_id", "")),
    ("event_id", _mutate("event_id", 5)),
    ("event_id", _mutate("event_id", _DELETE)),
    ("event_type", _mutate("event_type", _DELETE)),
    ("timestamp", _mutate("timestamp", "yesterday")),
    ("timestamp", _mutate("timestamp", "2025-11-28T10:00:00")),
    ("data", _mutate("data", _DELETE)),
    ("data", _mutate("data", [1, 2])),
    ("subscription_id", _mutate("data.subscription_id", _DELETE)),
    ("customer_id", _mutate("data.customer_id", " ")),
    ("plan_id", _mutate("data.plan_id", 42)),
    ("total_budget", _mutate("data.total_budget", "lots")),
    ("total_budget", _mutate("data.total_budget", -5)),
    ("total_budget", _mutate("data.total_budget", "0.0000001")),
    ("total_budget", _mutate("data.total_budget", None)),
    ("currency", _mutate("data.currency", "usd")),
    ("currency", _mutate("data.currency", "DOLLARS")),
    ("period_end", _mutate("data.period_end", "2025-11-01T00:00:00Z")),
    ("period_start", _mutate("data.period_start", "not a date")),
    ("status", _mutate("data.status", "zombie")),
    ("new_total_budget", _mutate("data.new_total_budget", "1.2.3", seed("subscription_updated"))),
    ("new_plan_id", _mutate("data.new_plan_id", "", seed("subscription_updated"))),
    ("amount_paid", _mutate("data.amount_paid", -1, seed("invoice_paid"))),
    (
        "new_period_end",
        _mutate("data.new_period_end", "2025-01-01T00:00:00Z", seed("invoice_paid")),
    ),
    ("invoice_id", _mutate("data.invoice_id", _DELETE, seed("invoice_paid"))),
    ("event", b"{not json"),
    ("event", b"[]"),
    ("event", b""),
    ("event", "\u00e9".encode("latin-1")),
]


@pytest.mark.parametrize(("field", "raw"), MALFORMED)
def test_malformed_events_are_rejected_naming_the_field(field: str, raw: bytes) -> None:
    with pytest.raises(InvalidEvent) as decoded:
        decode_event(raw)
    assert field in str(decoded.value)
    gw = Gateway()
    before = gw.snapshot()
    with pytest.raises(InvalidEvent) as applied:
        gw.apply(raw)
    assert field in str(applied.value)
    assert isinstance(applied.value, ValueError)
    assert gw.snapshot() == before, "the table is left unchanged"


def test_both_decoders_accept_the_same_valid_variants() -> None:
    variants = [
        _mutate("data.total_budget", "100.50"),  # decimal as a string
        _mutate("data.total_budget", 1.5e2),  # exponent
        _mutate("timestamp", "2025-11-28T11:00:00+01:00"),  # an offset
        _mutate("data.status", "trialing"),
        _mutate("data.extra_field_from_a_newer_producer", {"x": 1}),
        _mutate("tenant_id", "cus_12345"),
        _mutate("version", 2),
    ]
    for raw in variants:
        decode_event(raw)
        Gateway().apply(raw)


def test_decoder_is_reused_and_strict_about_tz() -> None:
    naive = created(ts="2026-01-01T00:00:00")
    with pytest.raises(InvalidEvent, match="timestamp"):
        decode_event(naive)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(naive, type=events.SubscriptionCreated)
