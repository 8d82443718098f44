"""Every Billing API endpoint through BillingClient, against the running service, on
SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import httpx
import msgspec
import pytest
from billing_gateway import ApplyOutcome, Gateway, decode_event, events, to_micros
from billing_gateway.billing.api import SCOPES
from billing_gateway.billing.client import (
    AsyncBillingClient,
    BillingClient,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    Unprocessable,
)
from billing_gateway.billing.schema import WRITE, tables
from billing_gateway.billing.wire import Subscription

from .conftest import Service


def setup(svc: Service) -> tuple[str, str]:
    """A plan and a customer with an active subscription: (customer_id, subscription_id)."""
    with svc.client() as c:
        c.create_plan(id="plan_pro", name="Pro", currency="USD", included_budget="100", price="29")
        c.create_plan(id="plan_team", name="Team", currency="USD", included_budget="500", price="99")
        customer = c.create_customer("Acme", "ops@acme.io")
        sub = c.create_subscription(customer.id, "plan_pro")
    return customer.id, sub.id


def test_happy_path_and_outbox(service: Service) -> None:
    customer_id, sub_id = setup(service)
    with service.client() as c:
        assert c.get_customer(customer_id).email == "ops@acme.io"
        assert [p.id for p in c.list_plans()] == ["plan_pro", "plan_team"]
        sub = c.get_subscription(sub_id)
        assert (sub.status, sub.total_budget, sub.plan_id) == ("active", Decimal("100"), "plan_pro")
        assert sub.period_end - sub.period_start == timedelta(days=30)
        assert c.update_subscription(sub_id, plan_id="plan_team").total_budget == Decimal("500")
        assert c.update_subscription(sub_id, total_budget="750.25").total_budget == Decimal("750.25")
        usage = c.record_usage(sub_id, "12.5", "usage-1")
        assert usage.amount == Decimal("12.5")
        assert c.record_usage(sub_id, "12.5", "usage-1").id == usage.id, "idempotent by key"
        assert c.cancel_subscription(sub_id).status == "canceled"
        page = c.events(customer_id)
    types = [e["event_type"] for e in page.events]
    assert types == [
        "customer.created",
        "subscription.created",
        "subscription.updated",
        "subscription.updated",
        "subscription.updated",
    ]
    # POSTs carry the client's Idempotency-Key as the correlation id; PATCHes have none.
    assert [("correlation_id" in e) for e in page.events] == [True, True, False, False, False]
    assert all(e["tenant_id"] == customer_id for e in page.events)
    gw = Gateway()
    outcomes = [gw.apply(msgspec.json.encode(e)) for e in page.events]
    assert outcomes == [ApplyOutcome.IGNORED] + [ApplyOutcome.APPLIED] * 4
    b = gw.budget(customer_id)
    assert b is not None and (b.plan_id, b.total, b.status) == ("plan_team", to_micros("750.25"), "canceled")


def test_invoices_and_payment_open_the_next_period(service: Service) -> None:
    customer_id, sub_id = setup(service)
    with service.client() as c:
        c.record_usage(sub_id, "130", "u-over")  # 30 beyond the included 100
        start = c.get_subscription(sub_id).period_end
        service.store.close_due_cycles(auto_pay=False, now=start + timedelta(seconds=1))
        (invoice,) = c.list_invoices(customer_id)
        assert invoice.status == "open"
        assert [(line.kind, line.amount) for line in invoice.lines] == [
            ("plan", Decimal("29")),
            ("usage", Decimal("30")),
        ]
        assert invoice.total == Decimal("59")
        paid = c.pay_invoice(invoice.id, idempotency_key="pay-1")
        assert paid.status == "paid" and paid.paid_at is not None
        assert c.pay_invoice(invoice.id, idempotency_key="pay-1").status == "paid", "replayed"
        with pytest.raises(Conflict):
            c.pay_invoice(invoice.id)
        sub = c.get_subscription(sub_id)
        assert sub.period_start == start and sub.period_end == start + timedelta(days=30)
        last = decode_event(msgspec.json.encode(c.events(customer_id).events[-1]))
        assert last.event_type == "invoice.paid"


def test_error_statuses(service: Service) -> None:
    customer_id, sub_id = setup(service)
    with service.client() as c:
        with pytest.raises(NotFound):
            c.get_customer("cus_nope")
        with pytest.raises(NotFound):
            c.create_subscription("cus_nope", "plan_pro")
        with pytest.raises(NotFound):
            c.create_subscription(customer_id, "plan_nope")
        with pytest.raises(Unprocessable):
            c.update_subscription(sub_id, total_budget="1.0000001")
        with pytest.raises(Unprocessable):
            c.update_subscription(sub_id, total_budget="-5")
        with pytest.raises(Unprocessable):
            c.create_plan(name="Bad", currency="usd", included_budget="1", price="1")
        with pytest.raises(Conflict):
            c.create_plan(id="plan_pro", name="Again", currency="USD", included_budget="1", price="1")
        c.cancel_subscription(sub_id)
        with pytest.raises(Conflict):
            c.update_subscription(sub_id, status="active")
        with pytest.raises(Conflict):
            c.record_usage(sub_id, "1", "same-key") and c.record_usage(sub_id, "2", "same-key")
    with service.client("bgk_not_a_key") as bad, pytest.raises(Unauthorized):
        bad.get_customer(customer_id)
    response = httpx.get(f"{service.url}/api/v1/customers/{customer_id}")
    assert response.status_code == 401 and "Authorization" in response.json()["detail"]
    response = httpx.post(
        f"{service.url}/api/v1/customers",
        content=b"{not json",
        headers={"Authorization": f"Bearer {service.admin_key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400


def test_idempotency_keys(service: Service) -> None:
    with service.client() as c:
        first = c.create_customer("A", "a@x.io", idempotency_key="k-1")
        again = c.create_customer("A", "a@x.io", idempotency_key="k-1")
        assert again == first
        with pytest.raises(Conflict, match="another request"):
            c.create_customer("B", "b@x.io", idempotency_key="k-1")
        assert c.events().events[-1]["data"]["id"] == first.id
        assert len(c.events().events) == 1, "the replay wrote no second event"


@pytest.mark.parametrize("scope", SCOPES)
def test_every_scope_is_required(service: Service, scope: str) -> None:
    customer_id, sub_id = setup(service)
    invoice_id = "inv_missing"
    calls = {
        "billing:customers:create": lambda c: c.create_customer("X", "x@y.z"),
        "billing:customers:read": lambda c: c.get_customer(customer_id),
        "billing:subscriptions:create": lambda c: c.create_subscription(customer_id, "plan_pro"),
        "billing:subscriptions:read": lambda c: c.get_subscription(sub_id),
        "billing:subscriptions:update": lambda c: c.update_subscription(sub_id, total_budget="1"),
        "billing:usage:create": lambda c: c.record_usage(sub_id, "1", "k"),
        "billing:plans:read": lambda c: c.list_plans(),
        "billing:plans:write": lambda c: c.create_plan(
            name="P", currency="USD", included_budget="1", price="1"
        ),
        "billing:invoices:read": lambda c: c.list_invoices(),
        "billing:invoices:write": lambda c: c.pay_invoice(invoice_id),
        "billing:events:read": lambda c: c.events(),
        "billing:routing:read": lambda c: c.list_routing_policies(),
        "billing:routing:write": lambda c: c.create_routing_policy(
            priority=1, match_expression="true", strategy="failover", targets=[{"name": "a"}]
        ),
    }
    others = [s for s in SCOPES if s != scope]
    _, without = service.store.create_api_key(others)
    with service.client(without) as c, pytest.raises(Forbidden, match=scope):
        calls[scope](c)
    _, only = service.store.create_api_key([scope])
    with service.client(only) as c:
        try:
            calls[scope](c)
        except NotFound:
            assert scope == "billing:invoices:write"  # the scope passed; the invoice does not exist


def test_customer_bound_keys_see_only_their_customer(service: Service) -> None:
    mine, my_sub = setup(service)
    with service.client() as c:
        other = c.create_customer("Other", "o@x.io").id
        other_sub = c.create_subscription(other, "plan_pro").id
        service.store.close_due_cycles(auto_pay=False, now=c.get_subscription(other_sub).period_end)
        other_invoice = c.list_invoices(other)[0].id
    _, bound = service.store.create_api_key(["billing:*"], customer_id=mine)
    with service.client(bound) as c:
        assert c.get_customer(mine).id == mine
        assert c.get_subscription(my_sub).id == my_sub
        for call in (
            lambda: c.get_customer(other),
            lambda: c.get_subscription(other_sub),
            lambda: c.update_subscription(other_sub, total_budget="1"),
            lambda: c.cancel_subscription(other_sub),
            lambda: c.create_subscription(other, "plan_pro"),
            lambda: c.record_usage(other_sub, "1", "k-other"),
            lambda: c.pay_invoice(other_invoice),
            lambda: c.list_invoices(other),
            lambda: c.events(other),
        ):
            with pytest.raises(NotFound):
                call()
        with pytest.raises(Forbidden):
            c.create_customer("New", "n@x.io")
        assert {i.customer_id for i in c.list_invoices()} == {mine}
        assert {e["tenant_id"] for e in c.events().events} == {mine}
        assert [decode_event(e).data.customer_id for e in c.budget_events()] == [mine]  # type: ignore[union-attr]
    with service.client() as c:
        assert c.get_subscription(other_sub).total_budget == Decimal("100"), "untouched"


def test_async_client(service: Service) -> None:
    customer_id, sub_id = setup(service)

    async def body() -> None:
        async with AsyncBillingClient(service.url, service.admin_key) as c:
            assert (await c.get_customer(customer_id)).name == "Acme"
            assert (await c.update_subscription(sub_id, total_budget="5")).total_budget == Decimal("5")
            assert len(await c.budget_events()) == 1

    asyncio.run(body())


def test_openapi_is_served(service: Service) -> None:
    doc = httpx.get(f"{service.url}/openapi.json").json()
    assert "/api/v1/subscriptions/{subscription_id}" in doc["paths"]
    assert doc["info"]["title"] == "billing_gateway Billing API"


def test_failed_payment_void_and_causation(service: Service) -> None:
    customer_id, sub_id = setup(service)
    with service.client() as c:
        end = c.get_subscription(sub_id).period_end
        (invoice,) = service.store.close_due_cycles(auto_pay=False, now=end)
        failed = c.fail_payment(invoice.id)
        assert failed.status == "open"
        assert c.get_subscription(sub_id).status == "past_due"
        last = c.events(customer_id).events[-1]
        assert (last["event_type"], last["data"]["invoice_id"]) == ("invoice.payment_failed", invoice.id)
        assert c.void_invoice(invoice.id).status == "void"
        with pytest.raises(Conflict):
            c.pay_invoice(invoice.id)
        with pytest.raises(Conflict):
            c.fail_payment(invoice.id)
        # An auto-paid cycle: invoice.paid is caused by invoice.created.
        other = c.create_subscription(c.create_customer("B", "b@x.io").id, "plan_pro")
        service.store.close_due_cycles(auto_pay=True, now=other.period_end)
        created, paid = c.events(other.customer_id).events[-2:]
        assert (created["event_type"], paid["event_type"]) == ("invoice.created", "invoice.paid")
        assert paid["causation_id"] == created["event_id"]


def test_a_gateway_rebuilds_its_table_from_budget_events(service: Service) -> None:
    _, sub_id = setup(service)
    with service.client() as c:
        c.update_subscription(sub_id, plan_id="plan_team")
        c.update_subscription(sub_id, total_budget="42")
        following, rebuilt = Gateway(), Gateway()
        for event in c.events().events:
            following.apply(msgspec.json.encode(event))
        for event in c.budget_events():
            assert rebuilt.apply(event) is ApplyOutcome.APPLIED
    assert rebuilt.budgets() == following.budgets()


def test_outbox_metrics(service: Service) -> None:
    setup(service)
    text = httpx.get(f"{service.url}/metrics").text
    assert 'billing_outbox_events{status="pending"} 2' in text  # customer + subscription, not dispatched
    assert 'billing_outbox_events{status="dead"} 0' in text
    assert "billing_outbox_oldest_pending_seconds" in text


def test_a_request_waiting_on_the_database_does_not_stall_the_others(service: Service) -> None:
    """A PATCH waiting for a row (or, on SQLite, the write lock) another transaction holds
    runs on a worker thread: the API goes on answering other requests meanwhile."""
    _, sub_id = setup(service)
    subs = tables["subscriptions"]

    def patch_budget() -> Subscription:
        with service.client() as c:
            return c.update_subscription(sub_id, total_budget="5")

    with service.store.engine.connect() as conn, ThreadPoolExecutor(1) as pool:
        conn.execution_options(**{WRITE: True})  # SQLite: take the write lock
        with conn.begin():
            conn.execute(
                subs.update().where(subs.c.id == sub_id).values(status="active")
            )  # PostgreSQL: the row
            stuck = pool.submit(patch_budget)
            time.sleep(0.3)
            assert not stuck.done(), "the PATCH waits for the lock"
            started = time.monotonic()
            plans = httpx.get(
                f"{service.url}/api/v1/plans",
                headers={"Authorization": f"Bearer {service.admin_key}"},
                timeout=2,
            )
            assert plans.status_code == 200 and time.monotonic() - started < 1.0
        assert stuck.result(timeout=10).total_budget == Decimal("5"), "and goes on once the lock is free"


def test_billing_s_own_events_are_typed_and_gateways_ignore_them(service: Service) -> None:
    """``customer.created`` and ``invoice.created`` are typed structs on the way out, on the
    same wire as before; a gateway ignores them, and ``decode_event`` reads them as unknown."""
    customer_id, sub_id = setup(service)
    with service.client() as c:
        end = c.get_subscription(sub_id).period_end
    (invoice,) = service.store.close_due_cycles(auto_pay=False, now=end)
    own = [
        p
        for _, p in service.store.list_events()
        if msgspec.json.decode(p)["event_type"] in {"customer.created", "invoice.created"}
    ]
    created, invoiced = (msgspec.json.decode(p, type=events.BillingEvent) for p in own)
    assert isinstance(created, events.CustomerCreated) and created.data == events.CustomerCreatedData(
        customer_id, "Acme", "ops@acme.io", None
    )
    assert isinstance(invoiced, events.InvoiceCreated) and invoiced.data == events.InvoiceCreatedData(
        invoice.id, sub_id, customer_id, "29"
    )
    assert msgspec.json.decode(own[0])["data"] == {
        "id": customer_id, "name": "Acme", "email": "ops@acme.io", "stripe_customer_id": None
    }  # fmt: skip
    gw = Gateway()
    for payload in own:
        assert isinstance(decode_event(payload), events.UnknownEvent)
        assert gw.apply(payload) == ApplyOutcome.IGNORED


@pytest.mark.parametrize("suffix", ["", "/", "/api/v1", "/api/v1/"])
def test_the_client_takes_the_origin_or_the_api_root(service: Service, suffix: str) -> None:
    with BillingClient(service.url + suffix, service.admin_key, retries=0) as c:
        assert c.list_plans() == []
        assert c.create_customer("Acme", "ops@acme.io").name == "Acme"


def test_the_client_is_importable_without_the_service() -> None:
    """``billing_gateway.billing`` gives the clients without loading the web framework or
    the database layer (a fresh interpreter)."""
    code = (
        "import sys\n"
        "from billing_gateway.billing import AsyncBillingClient, BillingClient\n"
        "assert BillingClient.__name__ == 'BillingClient' and AsyncBillingClient\n"
        "heavy = [m for m in ('litestar', 'sqlalchemy', 'uvicorn', 'psycopg') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
