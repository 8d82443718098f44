"""The billing database: one schema for SQLite and PostgreSQL, with versioned migrations.

Money is stored as integer micro-units (``BigInteger``); times as timezone-aware
timestamps. ``migrate(engine)`` brings any database to the latest version and is
safe to run at every start, from several processes at once: a new database gets the
latest schema at once (and every version stamped); an existing one runs the upgrade
steps it lacks, in order.

Versions:

1. the initial schema;
2. the constraints several replicas need: one settled payment per invoice (a second one
   recorded by the race this closes is kept, as ``duplicate``, for a refund), and usage
   idempotency keys unique per subscription instead of across all customers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = [
    "LATEST",
    "UPGRADES",
    "WRITE",
    "api_keys",
    "billing_events",
    "customers",
    "idempotency_keys",
    "invoice_lines",
    "invoices",
    "metadata",
    "migrate",
    "payments",
    "plans",
    "prices",
    "products",
    "schema_migrations",
    "subscriptions",
    "tables",
    "usage_records",
]

metadata = sa.MetaData()
Ts = sa.DateTime(timezone=True)
WRITE = "billing_write"
"""Connection execution option: this transaction writes (on SQLite it begins IMMEDIATE)."""

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", Ts, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.Text, nullable=False),
    sa.Column("customer_id", sa.String(64), nullable=True),
    sa.Column("created_at", Ts, nullable=False),
)

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("stripe_customer_id", sa.String(255), nullable=True),
    sa.Column("created_at", Ts, nullable=False),
)

products = sa.Table(
    "products",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", Ts, nullable=False),
)

plans = sa.Table(
    "plans",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("product_id", sa.String(64), sa.ForeignKey("products.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("interval_days", sa.Integer, nullable=False),
    sa.Column("included_budget", sa.BigInteger, nullable=False),
    sa.Column("created_at", Ts, nullable=False),
)

prices = sa.Table(
    "prices",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("plan_id", sa.String(64), sa.ForeignKey("plans.id"), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("created_at", Ts, nullable=False),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(64), sa.ForeignKey("customers.id"), nullable=False, index=True),
    sa.Column("plan_id", sa.String(64), sa.ForeignKey("plans.id"), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("total_budget", sa.BigInteger, nullable=False),
    sa.Column("period_start", Ts, nullable=False),
    sa.Column("period_end", Ts, nullable=False),
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("updated_at", Ts, nullable=False),
)

usage_records = sa.Table(
    "usage_records",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column(
        "subscription_id", sa.String(64), sa.ForeignKey("subscriptions.id"), nullable=False, index=True
    ),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("period_start", Ts, nullable=False),
    sa.Column("idempotency_key", sa.String(255), nullable=False),
    sa.Column("invoice_id", sa.String(64), nullable=True),
    sa.Column("created_at", Ts, nullable=False),
    sa.UniqueConstraint("subscription_id", "idempotency_key", name="uq_usage_key"),  # v2
)

invoices = sa.Table(
    "invoices",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(64), sa.ForeignKey("customers.id"), nullable=False, index=True),
    sa.Column("subscription_id", sa.String(64), sa.ForeignKey("subscriptions.id"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("period_start", Ts, nullable=False),
    sa.Column("period_end", Ts, nullable=False),
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("paid_at", Ts, nullable=True),
    sa.UniqueConstraint("subscription_id", "period_start", name="uq_invoice_period"),
)

invoice_lines = sa.Table(
    "invoice_lines",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("invoice_id", sa.String(64), sa.ForeignKey("invoices.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
)

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("invoice_id", sa.String(64), sa.ForeignKey("invoices.id"), nullable=False, index=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="settled"),  # v2
    sa.Index(  # v2
        "uq_payment_per_invoice",
        "invoice_id",
        unique=True,
        postgresql_where=sa.text("status = 'settled'"),
        sqlite_where=sa.text("status = 'settled'"),
    ),
)

billing_events = sa.Table(
    "billing_events",
    metadata,
    sa.Column(
        "seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("customer_id", sa.String(64), nullable=True, index=True),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", Ts, nullable=False),
    sa.Column("lease_until", Ts, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("published_at", Ts, nullable=True),
    sa.Index("ix_billing_events_pending", "status", "next_attempt_at"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("api_key_id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=False),
    sa.Column("response", sa.LargeBinary, nullable=False),
    sa.Column("created_at", Ts, nullable=False),
)

tables = metadata.tables


def _index(table: str, name: str) -> sa.Index:
    return next(i for i in tables[table].indexes if i.name == name)


def _v2_payments(conn: Connection) -> None:
    payments = tables["payments"]
    column = sa.schema.CreateColumn(payments.c.status).compile(dialect=conn.dialect)
    conn.execute(sa.text(f"ALTER TABLE payments ADD COLUMN {column}"))
    earlier = payments.alias("earlier")
    conn.execute(
        payments.update()
        .where(
            sa.exists().where(
                earlier.c.invoice_id == payments.c.invoice_id,
                sa.tuple_(earlier.c.created_at, earlier.c.id)
                < sa.tuple_(payments.c.created_at, payments.c.id),
            )
        )
        .values(status="duplicate")
    )
    _index("payments", "uq_payment_per_invoice").create(conn)


def _v2_usage_keys(conn: Connection) -> None:
    usage = tables["usage_records"]
    if conn.dialect.name == "postgresql":
        for old in sa.inspect(conn).get_unique_constraints("usage_records"):
            if old["column_names"] == ["idempotency_key"]:
                conn.execute(sa.text(f'ALTER TABLE usage_records DROP CONSTRAINT "{old["name"]}"'))
        new = next(c for c in usage.constraints if c.name == "uq_usage_key")
        # isolate_from_table=False: keep it in the table's own CREATE TABLE for new databases.
        conn.execute(sa.schema.AddConstraint(new, isolate_from_table=False))
        return
    # SQLite cannot drop a constraint: rebuild the table.
    conn.execute(sa.text("ALTER TABLE usage_records RENAME TO usage_records_v1"))
    for index in sa.inspect(conn).get_indexes("usage_records_v1"):
        conn.execute(sa.text(f'DROP INDEX "{index["name"]}"'))
    usage.create(conn)
    columns = ", ".join(c.name for c in usage.columns)
    conn.execute(sa.text(f"INSERT INTO usage_records ({columns}) SELECT {columns} FROM usage_records_v1"))
    conn.execute(sa.text("DROP TABLE usage_records_v1"))


def _v2_replica_constraints(conn: Connection) -> None:
    _v2_payments(conn)
    _v2_usage_keys(conn)


UPGRADES: list[tuple[int, Callable[[Connection], None]]] = [(2, _v2_replica_constraints)]
"""The steps from version 1 on, applied in order. Append; never edit an applied one."""
LATEST = max(v for v, _ in UPGRADES)


def migrate(engine: Engine) -> int:
    """Brings the database to :data:`LATEST`; returns it."""
    with engine.connect() as conn:
        conn.execution_options(**{WRITE: True})  # SQLite: one migrator at a time
        with conn.begin():
            if conn.dialect.name == "postgresql":  # one migrator at a time, from the first statement
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(74211)"))
            schema_migrations.create(conn, checkfirst=True)
            done = set(conn.execute(sa.select(schema_migrations.c.version)).scalars())
            if not done:  # a new database: the latest schema at once
                metadata.create_all(conn, tables=[t for t in tables.values() if t is not schema_migrations])
            for version, step in UPGRADES:
                if done and version not in done:
                    step(conn)
            stamps = [
                {"version": v, "applied_at": datetime.now(UTC)} for v in range(1, LATEST + 1) if v not in done
            ]
            if stamps:
                conn.execute(schema_migrations.insert(), stamps)
    return LATEST
