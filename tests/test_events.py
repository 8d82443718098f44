"""The events module: the seed payloads, the extensions, encoding, and rejections."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest
from billing_gateway import Gateway, InvalidEvent, decode_event, encode_event, events
from billing_gateway.events import validate_event
from billing_gateway.models import RoutingPolicy, Target, UsageRecord
from hypothesis import given, settings
from hypothesis import strategies as st

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


# ---- one validator: the Rust parser decides, every producer and consumer agrees -------------------


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


_CREATED = seed("subscription_created").decode()
_DATA = (
    '{"subscription_id":"sub_1","customer_id":"cus_1","plan_id":"p","plan_name":"P","total_budget":"1",'
    '"currency":"USD","period_start":"2026-01-01T00:00:00Z","period_end":"2026-02-01T00:00:00Z"}'
)


def _envelope(event_type: str = "subscription.created", data: str = _DATA, **extra: str) -> bytes:
    fields = "".join(f',"{k}":{v}' for k, v in extra.items())
    return _raw(
        f'{{"event_id":"e1","event_type":"{event_type}","timestamp":"2026-01-01T00:00:00Z","data":{data}{fields}}}'
    )


E_ACUTE_200 = "\u00e9" * 200  # 200 characters, 400 bytes
_POLICY = '{"id":"p1","priority":1,"match_expression":"true","strategy":"failover","targets":[{"name":"a"}]}'
_USAGE = (
    '{"tenant_id":"cus_1","subscription_id":"sub_1","amount":5,"period_start":"2026-01-01T00:00:00Z",'
    '"idempotency_key":"k"}'
)
_FAILED = '{"customer_id":"c","subscription_id":"s","invoice_id":"i"}'

# Payloads on which the two decoders used to disagree, or that a gateway cannot apply.
HOSTILE: list[tuple[str, bytes]] = [
    ("duplicate event_id", _raw(_CREATED.replace('"event_id"', '"event_id": "evt_a", "event_id"', 1))),
    (
        "duplicate data key",
        _envelope(data=_DATA.replace('"total_budget":"1"', '"total_budget":"1","total_budget":"9"')),
    ),
    ("duplicate unknown key", _envelope(data=_DATA[:-1] + ',"x":1,"x":2}')),
    ("duplicate key, unknown type", _envelope("coupon.created", '{"a":1,"a":2}')),
    ("-0 budget", _envelope(data=_DATA.replace('"total_budget":"1"', '"total_budget":-0'))),
    ("-0 budget as text", _envelope(data=_DATA.replace('"total_budget":"1"', '"total_budget":"-0"'))),
    ("-0.0 budget", _envelope(data=_DATA.replace('"total_budget":"1"', '"total_budget":-0.0'))),
    ("version 2**40", _envelope(version=str(2**40))),
    ("version -0", _envelope(version="-0")),
    ("version 1.0", _envelope(version="1.0")),
    ("400-byte correlation_id", _envelope(correlation_id=f'"{E_ACUTE_200}"')),
    ("400-byte tenant_id", _envelope(tenant_id=f'"{E_ACUTE_200}"')),
    ("400-byte subscription_id", _envelope(data=_DATA.replace("sub_1", E_ACUTE_200))),
    ("2000-byte plan_name", _envelope(data=_DATA.replace('"P"', '"' + "\u00e9" * 1000 + '"'))),
    ("' 5 ' budget", _envelope(data=_DATA.replace('"total_budget":"1"', '"total_budget":" 5 "'))),
    ("1_000 budget", _envelope(data=_DATA.replace('"total_budget":"1"', '"total_budget":"1_000"'))),
    (
        "arabic digits budget",
        _envelope(data=_DATA.replace('"total_budget":"1"', '"total_budget":"\u0661\u0662"')),
    ),
    ("+5 budget", _envelope(data=_DATA.replace('"total_budget":"1"', '"total_budget":"+5"'))),
    ("year 0 period", _envelope(data=_DATA.replace("2026-01-01T00:00:00Z", "0000-01-01T00:00:00Z"))),
    ("year 0 in UTC", _envelope(data=_DATA.replace("2026-01-01T00:00:00Z", "0001-01-01T00:30:00+01:00"))),
    ("year 10000 in UTC", _envelope(data=_DATA.replace("2026-02-01T00:00:00Z", "9999-12-31T23:00:00-02:00"))),
    ("leap second", _envelope(data=_DATA.replace("2026-01-01T00:00:00Z", "2016-12-31T23:59:60Z"))),
    (
        "offset without colon",
        _envelope(data=_DATA.replace("2026-01-01T00:00:00Z", "2026-01-01T00:00:00+0100")),
    ),
    (
        "rounds past year 9999",
        _envelope(data=_DATA.replace("2026-02-01T00:00:00Z", "9999-12-31T23:59:59.9999995Z")),
    ),
    ("\\x1c id", _envelope(data=_DATA.replace("sub_1", "\\u001c"))),
    ("ideographic space id", _envelope(data=_DATA.replace("sub_1", "\u3000"))),
    ("lone surrogate escape", _envelope(data=_DATA[:-1] + ',"x":"\\ud800"}')),
    ("lone surrogate key", _envelope("coupon.created", '{"\\udfff":1}')),
    ("lone surrogate byte", _raw(_CREATED.replace("sub_67890", "\ud800"))),
    ("1e400 in unknown data", _envelope("coupon.created", '{"a":1e400}')),
    ("huge int in unknown data", _envelope("coupon.created", '{"a":' + "9" * 400 + "}")),
    ("deep unknown data", _envelope("coupon.created", '{"a":' + "[" * 5000 + "]" * 5000 + "}")),
    ("deep unknown envelope field", _envelope(x="[" * 5000 + "]" * 5000)),
    ("empty event_type", _envelope("")),
    ("policy: unknown strategy", _envelope("routing_policy.upserted", _POLICY.replace("failover", "random"))),
    (
        "policy: negative weight",
        _envelope("routing_policy.upserted", _POLICY.replace('"a"}', '"a","weight":-1}')),
    ),
    ("policy: -0 weight", _envelope("routing_policy.upserted", _POLICY.replace('"a"}', '"a","weight":-0}'))),
    (
        "policy: huge priority",
        _envelope("routing_policy.upserted", _POLICY.replace(":1,", ":" + "9" * 30 + ",")),
    ),
    ("policy: 400-byte id", _envelope("routing_policy.upserted", _POLICY.replace("p1", E_ACUTE_200))),
    ("policy: blank id", _envelope("routing_policy.upserted", _POLICY.replace("p1", " "))),
    ("policy: missing targets", _envelope("routing_policy.upserted", _POLICY.split(',"targets"')[0] + "}")),
    ("policy deleted: empty id", _envelope("routing_policy.deleted", '{"policy_id":""}')),
    ("usage: negative amount", _envelope("usage.reported", _USAGE.replace(":5,", ":-5,"))),
    (
        "usage: amount beyond 64 bits",
        _envelope("usage.reported", _USAGE.replace(":5,", ":" + "9" * 25 + ",")),
    ),
    ("usage: year 0", _envelope("usage.reported", _USAGE.replace("2026", "0000"))),
    ("usage: float amount", _envelope("usage.reported", _USAGE.replace(":5,", ":5.0,"))),
]

# Accepted by both, and decoded to the same values.
VALID: list[tuple[str, bytes]] = [
    ("plain", _envelope()),
    (
        "256-byte ids",
        _envelope(data=_DATA.replace("sub_1", "\u00e9" * 128), correlation_id='"' + "x" * 256 + '"'),
    ),
    ("nanoseconds", _envelope(data=_DATA.replace("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.1234565Z"))),
    ("lowercase t and z", _envelope(data=_DATA.replace("2026-01-01T00:00:00Z", "2026-01-01t00:00:00z"))),
    ("space separator", _envelope(data=_DATA.replace("2026-01-01T00:00:00Z", "2026-01-01 00:00:00+05:30"))),
    ("year 1 in UTC", _envelope(data=_DATA.replace("2026-01-01T00:00:00Z", "0001-01-01T00:00:00Z"))),
    ("year 9999", _envelope(data=_DATA.replace("2026-02-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"))),
    ("exponent budget", _envelope(data=_DATA.replace('"total_budget":"1"', '"total_budget":"1.5e2"'))),
    ("zero budget", _envelope(data=_DATA.replace('"total_budget":"1"', '"total_budget":0'))),
    ("unknown type", _envelope("coupon.created", '{"a":[1,{"b":null}],"c":1e300}')),
    ("policy", _envelope("routing_policy.upserted", _POLICY)),
    ("policy deleted", _envelope("routing_policy.deleted", '{"policy_id":"p1"}')),
    ("usage", _envelope("usage.reported", _USAGE)),
    ("version 2", _envelope(version="2")),
    ("null optionals", _envelope(version="null", tenant_id="null")),
]


def _verdicts(raw: bytes) -> tuple[bool, bool, bool]:
    """(Rust validator, Python decoder, Gateway.apply) each accepted ``raw``."""
    results = []
    for check in (validate_event, decode_event, Gateway().apply):
        try:
            check(raw)
        except InvalidEvent:
            results.append(False)
        else:
            results.append(True)
    return results[0], results[1], results[2]


@pytest.mark.parametrize(("name", "raw"), HOSTILE, ids=[n for n, _ in HOSTILE])
def test_hostile_payloads_are_rejected_by_every_decoder(name: str, raw: bytes) -> None:
    assert _verdicts(raw) == (False, False, False)
    with pytest.raises(InvalidEvent) as exc:
        decode_event(raw)
    assert str(exc.value).split(":")[0], "the message names a field"


@pytest.mark.parametrize(("name", "raw"), VALID, ids=[n for n, _ in VALID])
def test_valid_payloads_are_accepted_by_every_decoder(name: str, raw: bytes) -> None:
    assert _verdicts(raw) == (True, True, True)


def test_timestamps_decode_to_the_microsecond_the_gateway_applies() -> None:
    raw = _envelope(data=_DATA.replace("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.1234565+01:00"))
    ev = decode_event(raw)
    assert isinstance(ev, events.SubscriptionCreated)
    gw = Gateway()
    gw.apply(raw)
    b = gw.budget("cus_1")
    assert b is not None and b.period_start == ev.data.period_start
    assert b.period_start == datetime(2025, 12, 31, 23, 0, 0, 123457, tzinfo=UTC)


def test_validate_event_takes_str_and_names_the_field() -> None:
    validate_event(_CREATED)
    with pytest.raises(InvalidEvent, match=r"^data\.subscription_id: longer than 256 bytes"):
        validate_event(_envelope(data=_DATA.replace("sub_1", E_ACUTE_200)))
    with pytest.raises(InvalidEvent, match=r"^event:"):
        validate_event(_CREATED.replace("sub_67890", "\ud800"))
    with pytest.raises(TypeError):
        validate_event(5)  # type: ignore[arg-type]


def test_encode_event_output_always_validates() -> None:
    ok = decode_event(seed("subscription_created"))
    assert isinstance(ok, events.SubscriptionCreated)
    long_key = msgspec.structs.replace(ok, correlation_id=E_ACUTE_200)
    with pytest.raises(InvalidEvent, match=r"^correlation_id: longer than 256 bytes"):
        encode_event(long_key)
    data = msgspec.structs.replace(ok.data, total_budget=Decimal("-0"))
    negative_zero = msgspec.structs.replace(ok, data=data)
    with pytest.raises(InvalidEvent, match=r"^data\.total_budget"):
        encode_event(negative_zero)
    assert encode_event(ok) == encode_event(decode_event(encode_event(ok)))
    with pytest.raises(InvalidEvent, match="surrogate"):
        encode_event(msgspec.structs.replace(ok, event_id="\ud800"))
    deep: object = 1
    for _ in range(10_000):
        deep = {"a": deep}
    unknown = events.UnknownEvent(event_id="e", event_type="a.b", timestamp=ok.timestamp, data={"x": deep})
    with pytest.raises(InvalidEvent, match="nested"):
        encode_event(unknown)
    with pytest.raises(InvalidEvent, match="nested"):
        Gateway().apply(unknown)


_TRICKY_VALUES: list[object] = [
    None,
    True,
    0,
    -0.0,
    1.0,
    -1,
    2**40,
    2**64,
    10**30,
    1e300,
    "",
    " ",
    "\t",
    "\u00a0",
    "\u3000",
    "x",
    "\u00e9" * 128,
    "\u00e9" * 129,
    "x" * 256,
    "x" * 257,
    "-0",
    "1_000",
    "\u0661\u0662",
    " 5 ",
    "+5",
    ".5",
    "5.",
    "1e2",
    "0.0000001",
    "NaN",
    "active",
    "canceled",
    "zombie",
    "USD",
    "usd",
    "failover",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+00:01",
    "2026-01-01T00:00:00",
    "2026-01-01T00:00:00.9999995Z",
    "2026-01-01 00:00:00z",
    "2026-13-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    [],
    {},
    [{"name": "a"}],
    [["a", 1, 0]],
    {"a": {"a": {"a": 1}}},
    ["x"],
]
_BASES = [
    json.loads(_envelope()),
    json.loads(seed("subscription_updated")),
    json.loads(seed("invoice_paid")),
    json.loads(
        _envelope("invoice.payment_failed", '{"customer_id":"c","subscription_id":"s","invoice_id":"i"}')
    ),
    json.loads(_envelope("routing_policy.upserted", _POLICY)),
    json.loads(_envelope("routing_policy.deleted", '{"policy_id":"p1"}')),
    json.loads(_envelope("usage.reported", _USAGE)),
    json.loads(_envelope("coupon.created", '{"a":1}')),
]


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    doc = json.loads(json.dumps(draw(st.sampled_from(_BASES))))
    for _ in range(draw(st.integers(1, 3))):
        target = doc if draw(st.booleans()) or not isinstance(doc.get("data"), dict) else doc["data"]
        keys = [*target, "version", "tenant_id", "status", "weight", "extra"]
        key = draw(st.sampled_from(keys))
        if draw(st.integers(0, 5)) == 0:
            target.pop(key, None)
        else:
            target[key] = json.loads(json.dumps(draw(st.sampled_from(_TRICKY_VALUES))))
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()


@given(mutated_events())
@settings(max_examples=1500, deadline=None)
def test_validator_decoder_and_gateway_always_agree(raw: bytes) -> None:
    verdicts = _verdicts(raw)
    assert len(set(verdicts)) == 1, verdicts
    if verdicts[0]:
        ev = decode_event(raw)
        assert decode_event(encode_event(ev)) == ev
