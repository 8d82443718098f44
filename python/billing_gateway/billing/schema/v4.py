"""Version 4, frozen: Stripe sync, as explicit DDL. The ``stripe_events`` inbox (each
verified webhook event once, by Stripe's id, with its processing state), ``stripe_objects``
(the ``created`` of the newest event applied per Stripe object, so an older one changes
nothing), and the Stripe ids on customers (unique from now on), plans (the price a plan is
billed at) and subscriptions (the Stripe subscription that drives it, and whether it
cancels at the end of its period). Independent of version 3's tables."""

from __future__ import annotations

from sqlalchemy.engine import Connection

__all__ = ["upgrade"]

_TYPES = {
    "sqlite": {"ts": "DATETIME", "blob": "BLOB", "seq": "INTEGER", "false": "0"},
    "postgresql": {"ts": "TIMESTAMP WITH TIME ZONE", "blob": "BYTEA", "seq": "BIGSERIAL", "false": "false"},
}

_DDL = """
CREATE TABLE stripe_events (
    seq {seq} NOT NULL,
    event_id VARCHAR(255) NOT NULL,
    event_type VARCHAR(255) NOT NULL,
    created BIGINT NOT NULL,
    object_id VARCHAR(255),
    payload {blob} NOT NULL,
    status VARCHAR(16) NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at {ts} NOT NULL,
    last_error TEXT,
    received_at {ts} NOT NULL,
    processed_at {ts},
    PRIMARY KEY (seq),
    UNIQUE (event_id)
);
CREATE INDEX ix_stripe_events_due ON stripe_events (status, next_attempt_at);
CREATE TABLE stripe_objects (
    object_id VARCHAR(255) NOT NULL,
    last_created BIGINT NOT NULL,
    last_event_id VARCHAR(255) NOT NULL,
    PRIMARY KEY (object_id)
);
CREATE UNIQUE INDEX uq_customers_stripe_customer_id ON customers (stripe_customer_id);
ALTER TABLE plans ADD COLUMN stripe_price_id VARCHAR(255);
CREATE UNIQUE INDEX uq_plans_stripe_price_id ON plans (stripe_price_id);
ALTER TABLE subscriptions ADD COLUMN stripe_subscription_id VARCHAR(255);
ALTER TABLE subscriptions ADD COLUMN cancel_at_period_end BOOLEAN NOT NULL DEFAULT {false};
CREATE UNIQUE INDEX uq_subscriptions_stripe_subscription_id ON subscriptions (stripe_subscription_id)
"""


def upgrade(conn: Connection) -> None:
    ddl = _DDL.format(**_TYPES[conn.dialect.name])
    for statement in ddl.split(";"):
        if statement.strip():
            conn.exec_driver_sql(statement)
