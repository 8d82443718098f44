"""The billing database's tables, as the latest migration leaves them: one schema for
SQLite and PostgreSQL. Money is stored as integer micro-units (``BigInteger``); times as
timezone-aware timestamps."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "WRITE",
    "api_keys",
    "billing_events",
    "customers",
    "idempotency_keys",
    "invoice_lines",
    "invoices",
    "metadata",
    "payments",
    "plans",
    "prices",
    "products",
    "routing_policies",
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

routing_policies = sa.Table(  # v3
    "routing_policies",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("priority", sa.BigInteger, nullable=False),
    sa.Column("match_expression", sa.Text, nullable=False),
    sa.Column("strategy", sa.String(16), nullable=False),
    sa.Column("targets", sa.Text, nullable=False),  # JSON: [{"name", "weight", "cost"}], cost in micros
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("updated_at", Ts, nullable=False),
    sa.Column("deleted_at", Ts, nullable=True),  # a tombstone
)

tables = metadata.tables
