"""Billing schema migrations: a version-1 database (with the duplicate payments the replica
race could leave) upgrades in place to the latest version (routing policies included), on
SQLite and PostgreSQL, and stays upgradable."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
import sqlalchemy as sa
from billing_gateway import RoutingPolicy, Target
from billing_gateway.billing.domain import Conflict
from billing_gateway.billing.schema import LATEST, metadata, tables, v1
from billing_gateway.billing.store import BillingStore

from .billing_fixtures import pg_schema, pg_url, race

__all__ = ["pg_url"]  # a fixture used here

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def v1_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A version-1 billing database with one invoice paid twice and one usage record."""
    url = str(tmp_path / "v1.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = sa.create_engine(
        f"sqlite:///{url}"
        if request.param == "sqlite"
        else url.replace("postgresql://", "postgresql+psycopg://")
    )
    t = tables  # inserting only the columns version 1 had
    with engine.begin() as conn:
        t["schema_migrations"].create(conn)
        v1.create(conn)  # the frozen DDL of version 1
        conn.execute(t["schema_migrations"].insert().values(version=1, applied_at=T0))
        conn.execute(t["customers"].insert().values(id="cus_1", name="A", email="a@x.io", created_at=T0))
        conn.execute(t["products"].insert().values(id="prod_1", name="Pro", created_at=T0))
        conn.execute(
            t["plans"].insert().values(
                id="plan_1", product_id="prod_1", name="Pro", currency="USD", interval_days=30,
                included_budget=10, created_at=T0,
            )
        )  # fmt: skip
        conn.execute(t["prices"].insert().values(id="price_1", plan_id="plan_1", amount=5, created_at=T0))
        for sub in ("sub_1", "sub_2"):
            conn.execute(
                t["subscriptions"].insert().values(
                    id=sub, customer_id="cus_1", plan_id="plan_1", status="active", total_budget=10,
                    period_start=T0, period_end=T0 + timedelta(days=30), created_at=T0, updated_at=T0,
                )
            )  # fmt: skip
        conn.execute(
            t["invoices"].insert().values(
                id="inv_1", customer_id="cus_1", subscription_id="sub_1", status="paid", currency="USD",
                total=5, period_start=T0, period_end=T0 + timedelta(days=30), created_at=T0, paid_at=T0,
            )
        )  # fmt: skip
        for i, paid_at in enumerate((T0 + timedelta(seconds=2), T0 + timedelta(seconds=1))):
            conn.execute(
                t["payments"].insert().values(id=f"pay_{i}", invoice_id="inv_1", amount=5, created_at=paid_at)
            )
        conn.execute(
            t["usage_records"].insert().values(
                id="ur_1", subscription_id="sub_1", customer_id="cus_1", amount=3, period_start=T0,
                idempotency_key="k-1", created_at=T0,
            )
        )  # fmt: skip
    engine.dispose()
    return url


def test_a_version_1_database_upgrades_in_place(v1_url: str) -> None:
    store = BillingStore.open(v1_url)
    payments, migrations = tables["payments"], tables["schema_migrations"]
    with store.engine.connect() as conn:
        assert set(conn.execute(sa.select(migrations.c.version)).scalars()) == set(range(1, LATEST + 1))
        statuses = dict(conn.execute(sa.select(payments.c.id, payments.c.status)).all())
    assert statuses == {"pay_1": "settled", "pay_0": "duplicate"}, (
        "the earliest settles; the other is to refund"
    )
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(payments.insert().values(id="pay_2", invoice_id="inv_1", amount=5, created_at=T0))
    # Usage keys are now per subscription, and the v1 record is still there.
    assert store.record_usage("sub_1", 3, "k-1") == (store.get_usage_record("ur_1"), False)
    assert store.record_usage("sub_2", 4, "k-1")[1], "the same key on another subscription is another record"
    with pytest.raises(Conflict):
        store.record_usage("sub_1", 4, "k-1")
    # Version 3: routing policies, and their tombstones.
    policy = RoutingPolicy("p", 1, "true", "failover", (Target("a"),))
    row, created = store.put_routing_policy(policy, replace=False)
    assert created and store.list_routing_policies() == [row]
    store.delete_routing_policy("p")
    assert store.list_routing_policies() == [] and len(store.routing_events()) == 1
    store.engine.dispose()
    again = BillingStore.open(v1_url)  # nothing left to do
    assert again.get_usage_record("ur_1") is not None
    again.engine.dispose()


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_processes_starting_together_on_a_new_database_migrate_it_once(tmp_path: Path, db: str) -> None:
    for attempt in range(10):
        with contextlib.ExitStack() as stack:
            url = str(tmp_path / f"{attempt}.db") if db == "sqlite" else stack.enter_context(pg_schema())
            stores = race(*[partial(BillingStore.open, url)] * 3)
            with stores[0].engine.connect() as conn:
                versions = conn.execute(sa.select(tables["schema_migrations"].c.version)).scalars().all()
            assert sorted(versions) == list(range(1, LATEST + 1))
            for store in stores:
                store.engine.dispose()


def _shape(engine: sa.Engine) -> dict[str, tuple[object, ...]]:
    """Each table's columns (name, type, nullability), unique constraints and indexes."""
    inspector = sa.inspect(engine)
    shape: dict[str, tuple[object, ...]] = {}
    for name in inspector.get_table_names():
        columns = sorted(
            (c["name"], str(c["type"]).split("(")[0], c["nullable"]) for c in inspector.get_columns(name)
        )
        uniques = sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(name))
        indexes = sorted(
            (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(name)
        )
        shape[name] = (columns, uniques, indexes)
    return shape


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_the_migrations_from_the_frozen_v1_build_the_current_tables(tmp_path: Path, db: str) -> None:
    """A new database is version 1 plus every upgrade; that must be what the tables declare."""
    with contextlib.ExitStack() as stack:
        urls = [
            str(tmp_path / f"{n}.db") if db == "sqlite" else stack.enter_context(pg_schema())
            for n in ("a", "b")
        ]
        migrated = BillingStore.open(urls[0]).engine
        declared = sa.create_engine(
            f"sqlite:///{urls[1]}"
            if db == "sqlite"
            else urls[1].replace("postgresql://", "postgresql+psycopg://")
        )
        metadata.create_all(declared)
        try:
            assert _shape(migrated) == _shape(declared)
        finally:
            migrated.dispose()
            declared.dispose()
