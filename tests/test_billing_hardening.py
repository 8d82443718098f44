"""The billing service under hostile and unlucky input, on SQLite and PostgreSQL: canceled
is terminal, money is bounded and summed exactly, malformed requests are 4xx naming the
problem, nothing billing commits is unappliable by a gateway, customer-bound keys cannot
touch shared objects, and budget rebuilds carry cancellations."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import msgspec
import pytest
import sqlalchemy as sa
from billing_gateway import ApplyOutcome, Gateway, Reason
from billing_gateway.billing import domain, wire
from billing_gateway.billing.client import Conflict, Forbidden, Unprocessable
from billing_gateway.billing.domain import Invalid as BillingInvalid
from billing_gateway.billing.schema import tables
from billing_gateway.billing.workers.ingest import UsageIngestor

from .conftest import NOW, Service
from .test_billing_api import setup


def outbox(svc: Service) -> list[dict[str, Any]]:
    return [msgspec.json.decode(p) for _, p in svc.store.list_events(limit=100_000)]


def post(svc: Service, path: str, body: bytes, **headers: Any) -> httpx.Response:
    return httpx.post(
        f"{svc.url}/api/v1{path}",
        content=body,
        headers={"Authorization": f"Bearer {svc.admin_key}", "Content-Type": "application/json", **headers},
    )


# ---- canceled is terminal ------------------------------------------------------------------


def test_canceled_subscription_refuses_every_transition_and_emits_nothing(service: Service) -> None:
    customer_id, sub_id = setup(service)
    with service.client() as c:
        end = c.get_subscription(sub_id).period_end
        (invoice,) = service.store.close_due_cycles(auto_pay=False, now=end)
        canceled = c.cancel_subscription(sub_id)
        before = outbox(service)
        for change in ({"status": "active"}, {"status": "past_due"}, {"plan_id": "plan_team"}):
            with pytest.raises(Conflict, match="canceled"):
                c.update_subscription(sub_id, **change)
        with pytest.raises(Conflict, match="canceled"):
            c.update_subscription(sub_id, total_budget="1000")
        with pytest.raises(Conflict, match="canceled"):
            c.fail_payment(invoice.id)
        # Paying the last invoice collects what is owed, but never reopens a period.
        assert c.pay_invoice(invoice.id).status == "paid"
        assert c.get_subscription(sub_id) == canceled
        # The scheduler never invoices a canceled subscription.
        assert service.store.close_due_cycles(now=end + timedelta(days=400)) == []
        assert [i.id for i in c.list_invoices(customer_id)] == [invoice.id]
    assert outbox(service) == before, "no event after the cancellation"


def test_paying_a_past_due_subscription_makes_it_active_again(service: Service) -> None:
    customer_id, sub_id = setup(service)
    with service.client() as c:
        end = c.get_subscription(sub_id).period_end
        (invoice,) = service.store.close_due_cycles(auto_pay=False, now=end)
        c.fail_payment(invoice.id)
        c.fail_payment(invoice.id)  # a second failed attempt: still past_due
        assert c.get_subscription(sub_id).status == "past_due"
        c.pay_invoice(invoice.id)
        assert c.get_subscription(sub_id).status == "active"
    gw = Gateway()
    for e in outbox(service):
        gw.apply(msgspec.json.encode(e))
    b = gw.budget(customer_id)
    assert b is not None and b.status == "active" and b.period_start == end


def test_paying_the_first_invoice_ends_the_trial(service: Service) -> None:
    customer_id, _ = setup(service)
    with service.client() as c:
        trial = c.create_subscription(customer_id, "plan_pro", trial_days=7)
        assert trial.status == "trialing"
        (invoice,) = service.store.close_due_cycles(now=trial.period_end)  # auto-paid
        assert invoice.subscription_id == trial.id
        assert c.get_subscription(trial.id).status == "active"
        last = c.events(customer_id).events[-1]
        assert (last["event_type"], last["data"]["status"]) == ("subscription.updated", "active")


# ---- money bounds and checked sums -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "field"),
    [("/usage-records", "amount"), ("/plans", "included_budget"), ("/plans", "price")],
)
def test_amounts_above_the_bound_are_422_naming_the_field(service: Service, path: str, field: str) -> None:
    _, sub_id = setup(service)
    bodies = {
        "/usage-records": {"subscription_id": sub_id, "amount": "1", "idempotency_key": "u-1"},
        "/plans": {"name": "Big", "currency": "USD", "included_budget": "1", "price": "1"},
    }
    for huge in ("9223372036854.775807", "1000000000.000001", "1e30"):
        response = post(service, path, msgspec.json.encode(bodies[path] | {field: huge}))
        assert response.status_code == 422, response.text
        assert response.json()["detail"].startswith(f"{field}:")
    ok = post(service, path, msgspec.json.encode(bodies[path] | {field: "1000000000"}))
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize(
    "amount",
    [b'"1_000"', '"١٢"'.encode(), b'" 5 "', b'"+5"', b'"5."', b'"0x10"', b"1.0000000000000001", b"12.5"],
)
def test_money_is_a_plain_decimal_string_or_an_integer(service: Service, amount: bytes) -> None:
    """Never a lenient parse, never a binary float (1.0000000000000001 would round to 1)."""
    body = b'{"name":"P","currency":"USD","price":"0","included_budget":' + amount + b"}"
    response = post(service, "/plans", body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("included_budget:")
    assert post(service, "/plans", body.replace(amount, b'"1000.5"')).status_code == 201
    assert post(service, "/plans", body.replace(amount, b"1000")).status_code == 201


def test_budget_above_the_bound_is_422(service: Service) -> None:
    customer_id, sub_id = setup(service)
    with service.client() as c:
        with pytest.raises(Unprocessable, match="total_budget"):
            c.update_subscription(sub_id, total_budget="9223372036854.775807")
        with pytest.raises(Unprocessable, match="total_budget"):
            c.create_subscription(customer_id, "plan_pro", total_budget="1000000001")


def test_one_overflowing_subscription_does_not_stop_the_cycle(service: Service) -> None:
    _, bad_sub = setup(service)
    with service.client() as c:
        good_sub = c.create_subscription(c.create_customer("Good", "g@x.io").id, "plan_pro")
        end = max(c.get_subscription(bad_sub).period_end, good_sub.period_end)
    # Two records of the largest 64-bit amount, as stored before amounts were bounded.
    sub = service.store.get_subscription(bad_sub)
    assert sub is not None
    with service.store.engine.begin() as conn:
        for i in range(2):
            conn.execute(
                tables["usage_records"]
                .insert()
                .values(
                    id=f"ur_huge_{i}", subscription_id=bad_sub, customer_id=sub.customer_id,
                    amount=2**63 - 1, period_start=sub.period_start, idempotency_key=f"huge-{i}",
                    created_at=sub.period_start,
                )
            )  # fmt: skip
    closed = service.store.close_due_cycles(now=end)
    assert [i.subscription_id for i in closed] == [good_sub.id]
    with service.client() as c:
        assert c.get_subscription(good_sub.id).period_start == good_sub.period_end, "paid and renewed"
        assert c.list_invoices(sub.customer_id) == [], "the overflowing one fails alone"
    assert service.store.close_due_cycles(now=end) == [], "and keeps failing alone"


def test_hostile_usage_events_are_rejected_not_retried(service: Service) -> None:
    _, sub_id = setup(service)
    sub = service.store.get_subscription(sub_id)
    assert sub is not None
    ingestor = UsageIngestor(service.store, None)  # type: ignore[arg-type]  # ingest() needs no broker

    def usage(key: str, amount: int) -> bytes:
        record = {
            "tenant_id": sub.customer_id, "subscription_id": sub_id, "amount": amount,
            "period_start": sub.period_start, "idempotency_key": key,
        }  # fmt: skip
        return msgspec.json.encode(
            {"event_id": f"usage_{key[:8]}", "event_type": "usage.reported", "timestamp": NOW, "data": record}
        )

    hostile = [("k" * 300, 1), ("a\x00b", 1), ("line\nbreak", 1), ("huge", 2**63 - 1)]
    for key, amount in hostile:
        assert ingestor.ingest(usage(key, amount)), "acknowledged: a retry cannot help"
    assert (ingestor.rejected, ingestor.recorded) == (4, 0)
    assert ingestor.ingest(usage("fine", 1_500_000)) and ingestor.recorded == 1
    for key, amount in hostile:  # the store itself refuses them too, for any other caller
        with pytest.raises(BillingInvalid):
            service.store.record_usage(sub_id, amount, key)


# ---- hostile bodies ---------------------------------------------------------------------------

DEEP = b"[" * 20_000 + b"]" * 20_000
HOSTILE: dict[str, tuple[str, bytes]] = {
    "deep array": ("/customers", DEEP),
    "deep object": ("/customers", b'{"a":' * 20_000 + b"1" + b"}" * 20_000),
    "deep in a field": ("/customers", b'{"name":' + DEEP + b',"email":"a@b.c"}'),
    "not UTF-8": ("/customers", b"\xff\xfe\xfd"),
    "not UTF-8 in a string": ("/customers", b'{"name":"\xff","email":"a@b.c"}'),
    "lone surrogate": ("/customers", b'{"name":"\\udc00","email":"a@b.c"}'),
    "lone high surrogate": ("/customers", b'{"name":"x\\ud800","email":"a@b.c"}'),
    "NUL in a name": ("/customers", b'{"name":"a\\u0000b","email":"a@b.c"}'),
    "NUL in an email": ("/customers", b'{"name":"a","email":"a@b.c\\u0000"}'),
    "newline after a currency": (
        "/plans",
        b'{"name":"P","currency":"USD\\n","included_budget":"1","price":"1"}',
    ),
    "newline after an id": (
        "/plans",
        b'{"id":"plan_x\\n","name":"P","currency":"USD","included_budget":"1","price":"1"}',
    ),
    "5000-digit amount": (
        "/plans",
        b'{"name":"P","currency":"USD","included_budget":1' + b"0" * 5000 + b',"price":"1"}',
    ),
    "huge exponent": ("/plans", b'{"name":"P","currency":"USD","included_budget":1e999999,"price":1}'),
    "bool amount": ("/plans", b'{"name":"P","currency":"USD","included_budget":true,"price":1}'),
    "wrong type": ("/customers", b'{"name":["x"],"email":"a@b.c"}'),
    "not an object": ("/customers", b'"just a string"'),
    "empty": ("/customers", b""),
    "giant": ("/customers", b'{"name":"' + b"x" * 2_000_000 + b'","email":"a@b.c"}'),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_bodies_are_4xx_naming_the_problem(service: Service, case: str) -> None:
    path, body = HOSTILE[case]
    response = post(service, path, body)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.json()["detail"], "a JSON error saying what is wrong"
    with service.client() as c:
        assert c.list_plans() == [], "the process keeps serving, and nothing was stored"
        assert c.events().events == []


@pytest.mark.parametrize(
    "url",
    [
        "/customers/cus%00x",
        "/customers/" + "c" * 10_000,
        "/subscriptions/sub%00x",
        "/subscriptions/%F0%9F%98%80",
        "/invoices?customer_id=cus%00x",
        "/events?customer_id=" + "c" * 1000,
    ],
)
def test_hostile_ids_are_4xx(service: Service, url: str) -> None:
    response = httpx.get(
        f"{service.url}/api/v1{url}", headers={"Authorization": f"Bearer {service.admin_key}"}
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.json()["detail"]


def test_hostile_ids_in_a_patch_and_a_post_are_4xx(service: Service) -> None:
    headers = {"Authorization": f"Bearer {service.admin_key}"}
    response = httpx.patch(f"{service.url}/api/v1/subscriptions/sub%00x", json={}, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    response = httpx.post(f"{service.url}/api/v1/invoices/inv%00x/pay", headers=headers)
    assert 400 <= response.status_code < 500, response.text


def test_an_unreachable_database_is_503_and_the_service_recovers(service: Service) -> None:
    setup(service)
    engine = service.store.engine
    service.store.engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")  # refused
    try:
        response = httpx.get(
            f"{service.url}/api/v1/plans", headers={"Authorization": f"Bearer {service.admin_key}"}
        )
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "database" in response.json()["detail"]
    finally:
        service.store.engine.dispose()
        service.store.engine = engine
    with service.client() as c:
        assert len(c.list_plans()) == 2


# ---- nothing billing commits is unappliable ------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        ("é" * 200).encode(),  # 400 bytes of UTF-8
        b"\xe9" * 200,  # 200 bytes of Latin-1: 400 bytes once re-encoded as UTF-8
        b"k" * 256,
        b"",
        b"a b",
        b"a\tb",
    ],
)
def test_bad_idempotency_keys_are_422_naming_the_header(service: Service, key: bytes) -> None:
    body = msgspec.json.encode({"name": "A", "email": "a@b.c"})
    response = httpx.post(
        f"{service.url}/api/v1/customers",
        content=body,
        headers=[
            (b"Authorization", f"Bearer {service.admin_key}".encode()),
            (b"Content-Type", b"application/json"),
            (b"Idempotency-Key", key),
        ],
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("Idempotency-Key:")
    assert outbox(service) == []


def test_every_event_billing_commits_is_appliable(service: Service) -> None:
    customer_id, sub_id = setup(service)
    longest = "k" * 255
    with service.client() as c:
        c.create_plan(id="p" * 64, name="é" * 200, currency="USD", included_budget="1000000000", price="0")
        sub = c.create_subscription(customer_id, "p" * 64, idempotency_key=longest)
        c.update_subscription(sub_id, total_budget="1000000000")
        end = sub.period_end
        for i, invoice in enumerate(service.store.close_due_cycles(auto_pay=False, now=end)):
            c.fail_payment(invoice.id, idempotency_key=f"{longest[:-2]}f{i}")
            c.pay_invoice(invoice.id, idempotency_key=f"{longest[:-2]}p{i}")
        c.cancel_subscription(sub.id)
    gw = Gateway()
    for e in outbox(service):
        gw.apply(msgspec.json.encode(e))  # never InvalidEvent
    b = gw.budget(customer_id)
    assert b is not None and (b.subscription_id, b.plan_name, b.status) == (sub.id, "é" * 200, "canceled")


def test_the_store_never_commits_an_event_a_gateway_cannot_apply(service: Service) -> None:
    store = service.store
    customer = store.create_customer("A", "a@x.io")
    # Past the API's bounds, straight to the store: the outbox's validator is the last word.
    store.create_plan(plan_id="plan_long", name="é" * 600, currency="USD", included_budget=1, price=0)
    with pytest.raises(BillingInvalid, match=r"data\.plan_name: .*1024 bytes"):
        store.create_subscription(customer.id, "plan_long")
    with pytest.raises(BillingInvalid, match="correlation_id"):
        store.create_customer("B", "b@x.io", correlation_id="é" * 200)
    assert [e["event_type"] for e in outbox(service)] == ["customer.created"], "nothing else committed"
    # A row stored before the bounds is left out of a rebuild (and logged), not a 500.
    now = store.clock()
    with store.engine.begin() as conn:
        conn.execute(
            tables["subscriptions"].insert().values(
                id="sub_legacy", customer_id=customer.id, plan_id="plan_long", status="active",
                total_budget=1, period_start=now, period_end=now + timedelta(days=30),
                created_at=now, updated_at=now,
            )
        )  # fmt: skip
    with service.client() as c:
        assert c.budget_events() == []


# ---- customer-bound keys ---------------------------------------------------------------------


def test_customer_bound_keys_cannot_change_shared_objects(service: Service) -> None:
    mine, _ = setup(service)
    _, bound = service.store.create_api_key(["billing:*"], customer_id=mine)
    with service.client(bound) as c:
        with pytest.raises(Forbidden, match="customer-bound"):
            c.create_plan(id="plan_evil", name="Evil", currency="USD", included_budget="1", price="0")
        with pytest.raises(Forbidden, match="customer-bound"):
            c.create_plan(name="Evil", currency="USD", included_budget="1", price="0")
        assert [p.id for p in c.list_plans()] == ["plan_pro", "plan_team"]


def test_usage_keys_are_scoped_to_their_subscription(service: Service) -> None:
    mine, my_sub = setup(service)
    with service.client() as c:
        other_sub = c.create_subscription(c.create_customer("Other", "o@x.io").id, "plan_pro").id
        theirs = c.record_usage(other_sub, "5", "usage-2026-06")
    _, bound = service.store.create_api_key(["billing:*"], customer_id=mine)
    with service.client(bound) as c:
        # Neither blocked by, nor told about, another customer's record under the same key.
        assert c.record_usage(my_sub, "1", "usage-2026-06").amount == 1
    with service.client() as c:
        assert c.record_usage(other_sub, "5", "usage-2026-06") == theirs, "their retry still replays"


# ---- budget rebuilds carry cancellations -----------------------------------------------------


def test_a_rebuilt_gateway_refuses_a_canceled_tenant(service: Service) -> None:
    customer_id, sub_id = setup(service)
    gw = Gateway()
    for e in outbox(service):
        gw.apply(msgspec.json.encode(e))
    assert gw.check(customer_id, 1).allowed
    with service.client() as c:
        c.cancel_subscription(sub_id)  # the gateway misses this event (a wiped stream)
        rebuild = c.budget_events()
    assert [decode(e)["data"]["status"] for e in rebuild] == ["canceled"]
    for e in rebuild:
        gw.apply(e)
    decision = gw.check(customer_id, 1)
    assert not decision.allowed and decision.reason is Reason.INACTIVE
    fresh = Gateway()
    for e in rebuild:
        fresh.apply(e)
    assert fresh.check(customer_id, 1).reason is Reason.INACTIVE


def test_budget_events_carry_only_each_customers_current_subscription(service: Service) -> None:
    customer_id, old_sub = setup(service)
    with service.client() as c:
        new_sub = c.create_subscription(customer_id, "plan_team").id
        c.update_subscription(old_sub, total_budget="7")  # the older one changes last
        other = c.create_customer("Other", "o@x.io").id
        other_sub = c.create_subscription(other, "plan_pro").id
        rebuild = c.budget_events()
    assert sorted(decode(e)["data"]["subscription_id"] for e in rebuild) == sorted([new_sub, other_sub])
    gw = Gateway()
    for e in rebuild:
        assert gw.apply(e) is ApplyOutcome.APPLIED
    b = gw.budget(customer_id)
    assert b is not None and (b.subscription_id, b.total) == (new_sub, 500_000_000)


def decode(e: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = msgspec.json.decode(e)
    return doc


def test_subscription_statuses_are_defined_once() -> None:
    """The domain's statuses are the store's and the API's: every status has its transitions,
    and a request may ask for exactly the statuses a transition leads to."""
    assert set(domain.TRANSITIONS) == set(domain.STATUSES)
    assert set().union(*domain.TRANSITIONS.values()) == set(domain.REQUESTABLE_STATUSES)
    for status in domain.STATUSES:
        try:
            msgspec.convert({"status": status}, wire.SubscriptionPatch)
        except msgspec.ValidationError:
            assert status not in domain.REQUESTABLE_STATUSES
        else:
            assert status in domain.REQUESTABLE_STATUSES
