"""Version 1, frozen: the schema exactly as the first release created it, as explicit DDL
(never derived from the current tables, which later versions change). Every database
starts here; :mod:`.v2` and later steps take it to the latest."""

from __future__ import annotations

from sqlalchemy.engine import Connection

__all__ = ["create"]

_TYPES = {
    "sqlite": {"ts": "DATETIME", "blob": "BLOB", "seq": "INTEGER", "serial": "INTEGER"},
    "postgresql": {"ts": "TIMESTAMP WITH TIME ZONE", "blob": "BYTEA", "seq": "BIGSERIAL", "serial": "SERIAL"},
}

_DDL = """
CREATE TABLE api_keys (
    id VARCHAR(64) NOT NULL,
    key_hash VARCHAR(64) NOT NULL,
    scopes TEXT NOT NULL,
    customer_id VARCHAR(64),
    created_at {ts} NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (key_hash)
);
CREATE TABLE billing_events (
    seq {seq} NOT NULL,
    event_id VARCHAR(64) NOT NULL,
    event_type VARCHAR(64) NOT NULL,
    customer_id VARCHAR(64),
    payload {blob} NOT NULL,
    status VARCHAR(16) NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at {ts} NOT NULL,
    lease_until {ts},
    last_error TEXT,
    created_at {ts} NOT NULL,
    published_at {ts},
    PRIMARY KEY (seq),
    UNIQUE (event_id)
);
CREATE INDEX ix_billing_events_customer_id ON billing_events (customer_id);
CREATE INDEX ix_billing_events_pending ON billing_events (status, next_attempt_at);
CREATE TABLE customers (
    id VARCHAR(64) NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    stripe_customer_id VARCHAR(255),
    created_at {ts} NOT NULL,
    PRIMARY KEY (id)
);
CREATE TABLE idempotency_keys (
    api_key_id VARCHAR(64) NOT NULL,
    "key" VARCHAR(255) NOT NULL,
    request_hash VARCHAR(64) NOT NULL,
    status_code INTEGER NOT NULL,
    response {blob} NOT NULL,
    created_at {ts} NOT NULL,
    PRIMARY KEY (api_key_id, "key")
);
CREATE TABLE products (
    id VARCHAR(64) NOT NULL,
    name TEXT NOT NULL,
    created_at {ts} NOT NULL,
    PRIMARY KEY (id)
);
CREATE TABLE plans (
    id VARCHAR(64) NOT NULL,
    product_id VARCHAR(64) NOT NULL,
    name TEXT NOT NULL,
    currency VARCHAR(3) NOT NULL,
    interval_days INTEGER NOT NULL,
    included_budget BIGINT NOT NULL,
    created_at {ts} NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(product_id) REFERENCES products (id)
);
CREATE TABLE prices (
    id VARCHAR(64) NOT NULL,
    plan_id VARCHAR(64) NOT NULL,
    amount BIGINT NOT NULL,
    created_at {ts} NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(plan_id) REFERENCES plans (id)
);
CREATE TABLE subscriptions (
    id VARCHAR(64) NOT NULL,
    customer_id VARCHAR(64) NOT NULL,
    plan_id VARCHAR(64) NOT NULL,
    status VARCHAR(32) NOT NULL,
    total_budget BIGINT NOT NULL,
    period_start {ts} NOT NULL,
    period_end {ts} NOT NULL,
    created_at {ts} NOT NULL,
    updated_at {ts} NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(customer_id) REFERENCES customers (id),
    FOREIGN KEY(plan_id) REFERENCES plans (id)
);
CREATE INDEX ix_subscriptions_customer_id ON subscriptions (customer_id);
CREATE TABLE invoices (
    id VARCHAR(64) NOT NULL,
    customer_id VARCHAR(64) NOT NULL,
    subscription_id VARCHAR(64) NOT NULL,
    status VARCHAR(16) NOT NULL,
    currency VARCHAR(3) NOT NULL,
    total BIGINT NOT NULL,
    period_start {ts} NOT NULL,
    period_end {ts} NOT NULL,
    created_at {ts} NOT NULL,
    paid_at {ts},
    PRIMARY KEY (id),
    FOREIGN KEY(customer_id) REFERENCES customers (id),
    FOREIGN KEY(subscription_id) REFERENCES subscriptions (id),
    CONSTRAINT uq_invoice_period UNIQUE (subscription_id, period_start)
);
CREATE INDEX ix_invoices_customer_id ON invoices (customer_id);
CREATE TABLE usage_records (
    id VARCHAR(64) NOT NULL,
    subscription_id VARCHAR(64) NOT NULL,
    customer_id VARCHAR(64) NOT NULL,
    amount BIGINT NOT NULL,
    period_start {ts} NOT NULL,
    idempotency_key VARCHAR(255) NOT NULL,
    invoice_id VARCHAR(64),
    created_at {ts} NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(subscription_id) REFERENCES subscriptions (id),
    UNIQUE (idempotency_key)
);
CREATE INDEX ix_usage_records_subscription_id ON usage_records (subscription_id);
CREATE TABLE invoice_lines (
    id {serial} NOT NULL,
    invoice_id VARCHAR(64) NOT NULL,
    kind VARCHAR(16) NOT NULL,
    description TEXT NOT NULL,
    amount BIGINT NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(invoice_id) REFERENCES invoices (id)
);
CREATE INDEX ix_invoice_lines_invoice_id ON invoice_lines (invoice_id);
CREATE TABLE payments (
    id VARCHAR(64) NOT NULL,
    invoice_id VARCHAR(64) NOT NULL,
    amount BIGINT NOT NULL,
    created_at {ts} NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(invoice_id) REFERENCES invoices (id)
);
CREATE INDEX ix_payments_invoice_id ON payments (invoice_id);
"""


def create(conn: Connection) -> None:
    """Creates the version-1 tables (``schema_migrations`` is the migrator's own)."""
    ddl = _DDL.format(**_TYPES[conn.dialect.name])
    for statement in ddl.split(";"):
        if statement.strip():
            conn.exec_driver_sql(statement)
