"""The billing service as several real processes on one database: idempotency survives a
``kill -9`` between the work and its commit, and two API servers on one database
(PostgreSQL, and SQLite too) racing on the same keys, transitions and invoices stay
consistent."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import sqlalchemy as sa
from billing_gateway import to_micros
from billing_gateway.billing.schema import tables
from billing_gateway.billing.store import BillingStore

from .billing_fixtures import Api, BillingServer, billing_servers, nats_url, pg_url, race

__all__ = ["billing_servers", "nats_url", "pg_url"]  # fixtures used here


def count(store: BillingStore, table: str, **where: Any) -> int:
    t = tables[table]
    query = sa.select(sa.func.count()).select_from(t)
    for column, value in where.items():
        query = query.where(t.c[column] == value)
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def events_of(store: BillingStore, customer_id: str) -> list[dict[str, Any]]:
    return [msgspec.json.decode(p) for _, p in store.list_events(customer_id, limit=10_000)]


# ---- a kill -9 between the work and its commit ---------------------------------------------------


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_idempotency_survives_kill_9_between_the_work_and_the_commit(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    billing_servers: Callable[..., BillingServer],
    db: str,
) -> None:
    url = str(tmp_path / "billing.db") if db == "sqlite" else request.getfixturevalue("pg_url")
    store = BillingStore.open(url)
    _, key = store.create_api_key(["billing:*"])
    doomed = billing_servers(url, BILLING_GATEWAY_TEST_PAUSE_AT="idempotency").ready()
    body = {"name": "Acme", "email": "ops@acme.io"}
    api = Api(doomed.url, key)
    answered: list[int] = []
    first = threading.Thread(
        target=lambda: answered.append(_status(lambda: api.post("/customers", body, "retry-me"))),
        daemon=True,
    )
    first.start()
    doomed.wait_for_log("paused at idempotency")
    doomed.kill()
    first.join(10)
    assert answered == [0], "the client never got an answer"
    api.close()
    survivor = billing_servers(url).ready()
    api = Api(survivor.url, key)
    retried = api.post("/customers", body, "retry-me")
    again = api.post("/customers", body, "retry-me")
    api.close()
    assert retried.status_code == 201 and again.json() == retried.json()
    assert count(store, "customers") == 1
    assert count(store, "billing_events", event_type="customer.created") == 1
    store.engine.dispose()


def _status(call: Callable[[], Any]) -> int:
    try:
        return int(call().status_code)
    except Exception:
        return 0


# ---- two API servers on one PostgreSQL database --------------------------------------------------


@dataclass
class Twins:
    a: Api
    b: Api
    store: BillingStore


@pytest.fixture(params=["postgresql", "sqlite"])
def twins(
    request: pytest.FixtureRequest, tmp_path: Path, billing_servers: Callable[..., BillingServer]
) -> Iterator[Twins]:
    """Two ``billing serve`` processes started together on one new database: a PostgreSQL
    schema of their own, or one SQLite file."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else str(tmp_path / "b.db")
    servers = [billing_servers(url), billing_servers(url)]  # they migrate concurrently
    for server in servers:
        server.ready()
    store = BillingStore.open(url)
    _, key = store.create_api_key(["billing:*"])
    store.create_plan(plan_id="plan_pro", name="Pro", currency="USD", included_budget=to_micros(100), price=9)
    a, b = (Api(s.url, key) for s in servers)
    yield Twins(a, b, store)
    a.close()
    b.close()
    store.engine.dispose()


def on_both(
    t: Twins,
    method: str,
    path: str,
    bodies: tuple[dict[str, Any] | None, dict[str, Any] | None] = (None, None),
    keys: tuple[str | None, str | None] = (None, None),
) -> list[httpx.Response]:
    """A request to server a and one to server b, sent at the same moment."""
    sends = [
        partial(api.send, method, path, body, key)
        for api, body, key in zip((t.a, t.b), bodies, keys, strict=True)
    ]
    return race(*sends)


def new_subscription(t: Twins) -> tuple[str, str]:
    customer = t.a.post("/customers", {"name": "C", "email": "c@x.io"}).json()["id"]
    sub = t.a.post("/subscriptions", {"customer_id": customer, "plan_id": "plan_pro"}).json()["id"]
    return customer, sub


def open_invoice(t: Twins) -> tuple[str, str, str]:
    """A subscription whose period has ended with its invoice open: (customer, subscription, invoice)."""
    customer, sub = new_subscription(t)
    end = t.store.get_subscription(sub).period_end  # type: ignore[union-attr]
    (invoice,) = t.store.close_due_cycles(auto_pay=False, now=end + timedelta(seconds=1))
    return customer, sub, invoice.id


def test_same_idempotency_key_on_two_servers_does_it_once(twins: Twins) -> None:
    rounds = 25
    for i in range(rounds):
        body = {"name": f"C{i}", "email": f"c{i}@x.io"}
        first, second = on_both(twins, "POST", "/customers", (body, body), (f"twin-{i}", f"twin-{i}"))
        assert (first.status_code, second.status_code) == (201, 201), (first.text, second.text)
        assert first.json() == second.json(), "the second answer replays the first"
    assert count(twins.store, "customers") == rounds
    assert count(twins.store, "billing_events", event_type="customer.created") == rounds


def test_past_due_and_canceled_on_two_servers_serialize(twins: Twins) -> None:
    orders: Counter[str] = Counter()
    for _ in range(20):
        customer, sub = new_subscription(twins)
        late, cancel = on_both(
            twins, "PATCH", f"/subscriptions/{sub}", ({"status": "past_due"}, {"status": "canceled"})
        )
        final = twins.a.get(f"/subscriptions/{sub}").json()
        events = events_of(twins.store, customer)
        updates = [e["data"]["status"] for e in events if e["event_type"] == "subscription.updated"]
        # Canceling a past_due subscription is allowed, reviving a canceled one is not: either
        # order ends canceled, and the events say exactly what the answers said, in order.
        assert cancel.status_code == 200 and cancel.json()["status"] == "canceled"
        assert final == cancel.json(), "the final state is what the last 200 said"
        if late.status_code == 200:
            assert late.json()["status"] == "past_due"
            assert late.json()["updated_at"] < cancel.json()["updated_at"]
            assert updates == ["past_due", "canceled"]
            orders["past_due first"] += 1
        else:
            assert late.status_code == 409 and "canceled" in late.json()["detail"]
            assert updates == ["canceled"]
            orders["canceled first"] += 1
    assert sum(orders.values()) == 20


def test_the_same_invoice_paid_on_two_servers_is_paid_once(twins: Twins) -> None:
    for i in range(10):
        customer, sub, invoice = open_invoice(twins)
        first, second = on_both(twins, "POST", f"/invoices/{invoice}/pay", keys=(f"a-{i}", f"b-{i}"))
        assert sorted([first.status_code, second.status_code]) == [200, 409], (first.text, second.text)
        assert count(twins.store, "payments", invoice_id=invoice) == 1
        paid = [e for e in events_of(twins.store, customer) if e["event_type"] == "invoice.paid"]
        assert len(paid) == 1
        period_start = twins.a.get(f"/subscriptions/{sub}").json()["period_start"]
        assert period_start == paid[0]["data"]["new_period_start"]


def test_pay_and_payment_failed_on_two_servers_serialize(twins: Twins) -> None:
    for _ in range(10):
        customer, sub, invoice = open_invoice(twins)
        pay, fail = race(
            partial(twins.a.post, f"/invoices/{invoice}/pay"),
            partial(twins.b.post, f"/invoices/{invoice}/payment-failed"),
        )
        assert pay.status_code == 200, pay.text
        kinds = [e["event_type"] for e in events_of(twins.store, customer)][3:]  # after invoice.created
        if fail.status_code == 200:  # failed first, then paid: back to active
            assert kinds == ["invoice.payment_failed", "invoice.paid", "subscription.updated"]
        else:
            assert fail.status_code == 409 and kinds == ["invoice.paid"]
        assert twins.a.get(f"/subscriptions/{sub}").json()["status"] == "active"


def test_pay_and_void_on_two_servers_one_wins(twins: Twins) -> None:
    for _ in range(10):
        _, _, invoice = open_invoice(twins)
        pay, void = race(
            partial(twins.a.post, f"/invoices/{invoice}/pay"),
            partial(twins.b.post, f"/invoices/{invoice}/void"),
        )
        assert sorted([pay.status_code, void.status_code]) == [200, 409], (pay.text, void.text)
        final = twins.store.get_invoice(invoice).status
        assert final == ("paid" if pay.status_code == 200 else "void")
        assert count(twins.store, "payments", invoice_id=invoice) == (final == "paid")


def test_same_usage_key_and_plan_id_on_two_servers(twins: Twins) -> None:
    _, sub = new_subscription(twins)
    for i in range(10):
        usage = {"subscription_id": sub, "amount": "1.5", "idempotency_key": f"usage-{i}"}
        answers = on_both(twins, "POST", "/usage-records", (usage, usage))
        assert sorted(r.status_code for r in answers) == [200, 201], [r.text for r in answers]
        assert answers[0].json() == answers[1].json()
        plan = {"id": f"plan_{i}", "name": "P", "currency": "USD", "included_budget": "1", "price": "1"}
        answers = on_both(twins, "POST", "/plans", (plan, plan))
        assert sorted(r.status_code for r in answers) == [201, 409], [r.text for r in answers]
    assert count(twins.store, "usage_records") == 10


def test_two_schedulers_close_each_cycle_once(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    stores = [BillingStore.open(pg_url), BillingStore.open(pg_url)]
    store = stores[0]
    store.create_plan(plan_id="plan_pro", name="Pro", currency="USD", included_budget=to_micros(100), price=9)
    subs = []
    for i in range(20):
        customer = store.create_customer(f"C{i}", f"c{i}@x.io")
        subs.append(store.create_subscription(customer.id, "plan_pro"))
    now = max(s.period_end for s in subs) + timedelta(seconds=1)
    closed = race(*(partial(s.close_due_cycles, now=now) for s in stores))
    assert sum(len(c) for c in closed) == 20
    assert count(store, "invoices") == 20 and count(store, "payments") == 20
    assert count(store, "billing_events", event_type="invoice.paid") == 20
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    for s in stores:
        s.engine.dispose()
